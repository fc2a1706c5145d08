/**
 * Reading a barefootd.conf (Barefoot 1.4 syntax): server settings
 * (`keyword: value`), then blocks (`client pass { ... }`, `hostid block { ... }`,
 * `monitor { ... }`, `route { ... }`) holding `keyword: value` statements.
 * Pure; what cannot be read is an error with its line.
 *
 * @module
 */

/** `keyword: values...` at the top level or inside a block. */
export interface Statement {
  readonly keyword: string;
  readonly values: readonly string[];
  readonly line: number;
  /** For a server setting: the comments above it and at the end of its line, without `#`. */
  readonly comments: readonly string[];
}

/** `client pass { ... }` and the other blocks. */
export interface Block {
  /** `client`, `hostid`, `monitor` or `route`. */
  readonly kind: string;
  /** `pass` or `block` for client and hostid rules. */
  readonly action: "pass" | "block" | null;
  readonly statements: readonly Statement[];
  readonly line: number;
  readonly endLine: number;
  /** The comments above the block (since the previous setting or block), without `#`. */
  readonly comments: readonly string[];
  /** The comments inside the block, in order. */
  readonly innerComments: readonly string[];
}

/** A whole file. */
export interface BarefootFile {
  readonly settings: readonly Statement[];
  readonly blocks: readonly Block[];
  /** Comments at the top of the file that a blank line separates from what follows. */
  readonly header: readonly string[];
  /** Comments after the last setting or block. */
  readonly trailer: readonly string[];
  /** The file's lines, to quote blocks that are not translated. */
  readonly lines: readonly string[];
}

/** A line the reader cannot make sense of. */
export class BarefootSyntaxError extends Error {
  constructor(readonly line: number, message: string) {
    super(message);
  }
}

/** Timeouts, valid both as server settings and inside rules. */
const TIMEOUT_KEYWORDS = [
  "timeout.connect",
  "timeout.negotiate",
  "timeout.io",
  "timeout.io.tcp",
  "timeout.io.udp",
  "timeout.tcp_fin_wait",
] as const;

/** Server settings Barefoot documents (docs/BAREFOOT.md), and families of them. */
export const SERVER_KEYWORDS = [
  "external",
  "external.protocol",
  "external.rotation",
  "logoutput",
  "errorlog",
  "debug",
  ...TIMEOUT_KEYWORDS,
  "udp.connectdst",
  "user.privileged",
  "user.unprivileged",
  "user.libwrap",
  "clientmethod",
  "srchost",
  "internal",
] as const;
const SERVER_FAMILIES = ["libwrap.", "cpu.", "child.", "internal.", "external."];

/** Statements a rule block may hold. */
export const RULE_KEYWORDS = [
  "from",
  "to",
  "bounce to",
  "protocol",
  "log",
  "session.max",
  "session.throttle",
  "session.state.key",
  "session.state.max",
  "session.state.throttle",
  "session.inheritable",
  "bandwidth",
  "redirect from",
  ...TIMEOUT_KEYWORDS,
] as const;

const BLOCK_KINDS = ["client", "hostid", "monitor", "route"];

interface Token {
  readonly text: string;
  readonly line: number;
}

/** Every `#` comment of a file by line, and where the blank lines are. */
class Comments {
  readonly #byLine = new Map<number, string>();
  readonly #blank = new Set<number>();

  constructor(lines: readonly string[]) {
    lines.forEach((raw, i) => {
      const hash = raw.indexOf("#");
      if (hash !== -1) this.#byLine.set(i + 1, raw.slice(hash + 1).replace(/^ /, "").trimEnd());
      else if (raw.trim() === "") this.#blank.add(i + 1);
    });
  }

  /** Comments on lines first..last, in order. */
  within(first: number, last: number): string[] {
    const found: string[] = [];
    for (let line = first; line <= last; line++) {
      const comment = this.#byLine.get(line);
      if (comment !== undefined) found.push(comment);
    }
    return found;
  }

  /**
   * The comments between two items, split where the last blank line before
   * `line` falls: what is above it is free-standing, what is below annotates the item.
   */
  above(previousEnd: number, line: number): { free: string[]; own: string[] } {
    let split = previousEnd;
    for (let l = line - 1; l > previousEnd; l--) {
      if (this.#blank.has(l)) {
        split = l;
        break;
      }
    }
    return { free: this.within(previousEnd + 1, split), own: this.within(split + 1, line - 1) };
  }
}

/** Splits into words, `{` and `}`, dropping `#` comments; `keyword:value` becomes two tokens. */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    const code = raw.replace(/#.*$/, "");
    for (const word of code.replace(/([{}])/g, " $1 ").split(/\s+/)) {
      if (word === "") continue;
      const glued = /^([a-z][a-z0-9_.]*):(.+)$/i.exec(word);
      if (glued && isKeyword(glued[1])) {
        tokens.push({ text: `${glued[1]}:`, line }, { text: glued[2], line });
      } else tokens.push({ text: word, line });
    }
  });
  return tokens;
}

function isKeyword(word: string): boolean {
  const keyword = word.toLowerCase();
  return (SERVER_KEYWORDS as readonly string[]).includes(keyword) ||
    (RULE_KEYWORDS as readonly string[]).includes(keyword) ||
    SERVER_FAMILIES.some((family) => keyword.startsWith(family));
}

/** Parses a barefootd.conf; throws {@linkcode BarefootSyntaxError}. */
export function parseBarefoot(text: string): BarefootFile {
  const lines = text.split("\n");
  const tokens = tokenize(text);
  const comments = new Comments(lines);
  const settings: Statement[] = [];
  const blocks: Block[] = [];
  const header: string[] = [];
  let previousEnd = 0;
  /**
   * The comments that belong to an item starting at `line`. Those above the
   * first item head the file, except the ones directly above a first block.
   */
  const commentsAbove = (line: number, isBlock: boolean): string[] => {
    const { free, own } = comments.above(previousEnd, line);
    if (previousEnd === 0) {
      header.push(...free, ...(isBlock ? [] : own));
      return isBlock ? own : [];
    }
    return [...free, ...own];
  };
  let i = 0;
  while (i < tokens.length) {
    const token = tokens[i];
    if (token.text.endsWith(":")) {
      // A server setting: its values are the rest of its line.
      const keyword = token.text.slice(0, -1).toLowerCase();
      if (!isServerKeyword(keyword)) {
        throw new BarefootSyntaxError(token.line, `unknown server setting "${keyword}:"`);
      }
      const values: string[] = [];
      i++;
      while (i < tokens.length && tokens[i].line === token.line) values.push(tokens[i++].text);
      if (values.length === 0) {
        throw new BarefootSyntaxError(token.line, `"${keyword}:" has no value`);
      }
      settings.push({
        keyword,
        values,
        line: token.line,
        comments: [...commentsAbove(token.line, false), ...comments.within(token.line, token.line)],
      });
      previousEnd = token.line;
      continue;
    }
    // A block: KIND [ACTION] { ... }
    const kind = token.text.toLowerCase();
    if (!BLOCK_KINDS.includes(kind)) {
      throw new BarefootSyntaxError(
        token.line,
        `expected a setting ("keyword: value") or a rule ("client pass {"), got "${token.text}"`,
      );
    }
    i++;
    let action: "pass" | "block" | null = null;
    if (kind === "client" || kind === "hostid") {
      const word = tokens[i]?.text.toLowerCase();
      if (word !== "pass" && word !== "block") {
        throw new BarefootSyntaxError(token.line, `expected "${kind} pass {" or "${kind} block {"`);
      }
      action = word;
      i++;
    }
    if (tokens[i]?.text !== "{") {
      throw new BarefootSyntaxError(token.line, `expected "{" after "${kind}"`);
    }
    i++;
    const statements: Statement[] = [];
    let current: Statement & { values: string[] } | null = null;
    for (;;) {
      const next = tokens[i];
      if (!next) {
        throw new BarefootSyntaxError(
          token.line,
          `"${kind}" block opened here is never closed with "}"`,
        );
      }
      if (next.text === "}") {
        if (current) statements.push(current);
        blocks.push({
          kind,
          action,
          statements,
          line: token.line,
          endLine: next.line,
          comments: commentsAbove(token.line, true),
          innerComments: comments.within(token.line, next.line),
        });
        previousEnd = next.line;
        i++;
        break;
      }
      if (next.text === "{") {
        throw new BarefootSyntaxError(next.line, `unexpected "{" inside a block`);
      }
      const pair = `${next.text} ${tokens[i + 1]?.text ?? ""}`.toLowerCase();
      let keyword: string | null = null;
      let width = 1;
      if (pair === "bounce to:" || pair === "redirect from:") {
        [keyword, width] = [pair.slice(0, -1), 2];
      } else if (next.text.endsWith(":")) keyword = next.text.slice(0, -1).toLowerCase();
      if (keyword !== null) {
        if (
          kind !== "monitor" && kind !== "route" &&
          !(RULE_KEYWORDS as readonly string[]).includes(keyword)
        ) {
          throw new BarefootSyntaxError(
            next.line,
            `unknown keyword "${keyword}:" in a ${kind} rule`,
          );
        }
        if (current) statements.push(current);
        current = { keyword, values: [], line: next.line, comments: [] };
        i += width;
        continue;
      }
      if (!current) {
        throw new BarefootSyntaxError(
          next.line,
          `expected "keyword:" in the block, got "${next.text}"`,
        );
      }
      current.values.push(next.text);
      i++;
    }
  }
  const trailer = comments.within(previousEnd + 1, lines.length);
  if (previousEnd === 0) return { settings, blocks, header: trailer, trailer: [], lines };
  return { settings, blocks, header, trailer, lines };
}

function isServerKeyword(keyword: string): boolean {
  return (SERVER_KEYWORDS as readonly string[]).includes(keyword) ||
    SERVER_FAMILIES.some((family) => keyword.startsWith(family));
}
