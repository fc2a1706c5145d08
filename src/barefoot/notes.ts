/**
 * What the translation could not carry over: warnings for stderr and the
 * matching `# not translated` comments for the rule file. Pure.
 *
 * @module
 */

/** A warning about something not (fully) translated, at a line of the input. */
export interface ImportWarning {
  readonly line: number;
  readonly message: string;
}

/** A rule that must stay a comment, and why. */
export class NotTranslatable extends Error {}

/** Collects warnings; each also yields the comment that takes its place in the output. */
export class Notes {
  readonly warnings: ImportWarning[] = [];

  /** Records that `what` (at `line`) was not translated; returns the comment to write. */
  notTranslated(line: number, what: string, why: string): string {
    this.warnings.push({ line, message: `not translated: ${what} (${why})` });
    return `# not translated (line ${line}): ${what} -- ${why}`;
  }
}

/** Barefoot comments written back as TOML comments. */
export function commentLines(comments: readonly string[]): string[] {
  return comments.map((c) => c === "" ? "#" : `# ${c}`);
}

/** A TOML string. */
export const toml = (value: string): string => JSON.stringify(value);

/** A TOML list of strings. */
export const tomlList = (values: readonly string[]): string => `[${values.map(toml).join(", ")}]`;
