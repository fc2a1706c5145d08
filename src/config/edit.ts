/**
 * Edits of a rule file that keep it as its author wrote it: `portbounce
 * retire` removes one `[[rule]]` table by editing the text, never by a TOML
 * round-trip (which would drop comments and reorder keys). What goes: the
 * table's lines, the comment lines directly above its header (they describe
 * it) and the blank lines that separated it from the next table; every other
 * byte stays. The result is parsed again and must hold the same other rules.
 * Pure.
 *
 * @module
 */

/** A table header line: `[server]`, `[[rule]]`, with spaces and a comment allowed. */
const HEADER = /^\s*\[\[?\s*[A-Za-z0-9_"'.-]+\s*\]\]?\s*(#.*)?$/;
const RULE_HEADER = /^\s*\[\[\s*(rule|"rule"|'rule')\s*\]\]\s*(#.*)?$/;
const COMMENT = /^\s*#/;
const BLANK = /^\s*$/;

/** Which lines `removeRule` takes out (0-based, end exclusive) and the text without them. */
export interface RuleRemoval {
  readonly text: string;
  /** First and last line removed, 1-based, as an editor shows them. */
  readonly firstLine: number;
  readonly lastLine: number;
  /** The removed lines, as they were. */
  readonly removed: string;
}

/**
 * Table headers of `text`, as line indexes, ignoring lines inside
 * multi-line strings (`"""` and `'\'\'`); comments and one-line strings are
 * read past, so a delimiter in them opens nothing.
 */
function headers(lines: readonly string[]): { line: number; rule: boolean }[] {
  const found: { line: number; rule: boolean }[] = [];
  let open: '"""' | "'''" | null = null;
  lines.forEach((line, index) => {
    if (open === null && HEADER.test(line)) {
      found.push({ line: index, rule: RULE_HEADER.test(line) });
      return;
    }
    open = stringStateAfter(line, open);
  });
  return found;
}

/** Whether a multi-line string is open after `line`, given whether one was before it. */
function stringStateAfter(line: string, open: '"""' | "'''" | null): '"""' | "'''" | null {
  let i = 0;
  while (i < line.length) {
    if (open !== null) {
      if (open === '"""' && line[i] === "\\") {
        i += 2;
      } else if (line.startsWith(open, i)) {
        open = null;
        i += 3;
      } else {
        i++;
      }
      continue;
    }
    if (line.startsWith('"""', i) || line.startsWith("'''", i)) {
      open = line.slice(i, i + 3) as '"""' | "'''";
      i += 3;
      continue;
    }
    const c = line[i];
    if (c === "#") break; // A comment, to the end of the line.
    if (c === '"' || c === "'") {
      // A one-line string: to its closing quote (basic strings have escapes).
      i++;
      while (i < line.length && line[i] !== c) i += c === '"' && line[i] === "\\" ? 2 : 1;
    }
    i++;
  }
  return open;
}

/**
 * Removes the `index`-th `[[rule]]` table (1-based, in file order) from
 * `text`. Null when the file has no such table.
 */
export function removeRule(text: string, index: number): RuleRemoval | null {
  const eol = text.includes("\r\n") ? "\r\n" : "\n";
  const lines = text.split(eol);
  // A final line break leaves an empty last element: it is no line of the last table.
  const count = lines.at(-1) === "" ? lines.length - 1 : lines.length;
  const found = headers(lines);
  const header = found.filter((h) => h.rule)[index - 1];
  if (header === undefined) return null;
  const next = found.find((h) => h.line > header.line)?.line ?? null;
  // Its own comment block: the comment lines right above its header.
  let start = header.line;
  while (start > 0 && COMMENT.test(lines[start - 1]) && !isHeader(found, start - 1)) start--;
  let end: number;
  if (next === null) {
    // The last table: to the end, and the blank lines before it, so the file ends as it did.
    end = count;
    while (start > 0 && BLANK.test(lines[start - 1])) start--;
  } else {
    // The next table's comment block stays with it; the blank lines before that block go.
    end = next;
    while (end > header.line + 1 && COMMENT.test(lines[end - 1])) end--;
  }
  return {
    text: [...lines.slice(0, start), ...lines.slice(end)].join(eol),
    firstLine: start + 1,
    lastLine: end,
    removed: lines.slice(start, end).join(eol),
  };
}

function isHeader(found: readonly { line: number }[], line: number): boolean {
  return found.some((h) => h.line === line);
}
