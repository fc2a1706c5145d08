/**
 * Edits of a rule file that keep it as its author wrote it: `portbounce
 * retire` removes one `[[rule]]` table by editing the text, never by a TOML
 * round-trip (which would drop comments and reorder keys). What goes: the
 * table's lines (with its sub-tables, `[rule.health_check]`), the comment
 * lines directly above its header (they describe it) and the blank lines
 * that separated it from the next table; every other byte stays, line ends
 * included (LF, CRLF or a mix). The caller parses the result again and
 * checks that it holds the same other rules. Pure.
 *
 * @module
 */

/** A table header line: `[server]`, `[[rule]]`, `[rule.health_check]`, spaces and a comment allowed. */
const HEADER = /^\s*(\[\[?)\s*([A-Za-z0-9_"'.\s-]+?)\s*\]\]?\s*(#.*)?$/;
const COMMENT = /^\s*#/;
const BLANK = /^\s*$/;

/** Which lines `removeRule` takes out and the text without them. */
export interface RuleRemoval {
  readonly text: string;
  /** First and last line removed, 1-based, as an editor shows them. */
  readonly firstLine: number;
  readonly lastLine: number;
  /** The removed lines, as they were. */
  readonly removed: string;
}

/** A header: its line, whether it opens a `[[rule]]`, whether it belongs to the rule before it. */
interface Header {
  readonly line: number;
  readonly rule: boolean;
  /** `[rule.x]` or `[[rule.x]]`: a sub-table of the latest `[[rule]]`. */
  readonly subtable: boolean;
}

/** The key a header names, without quotes and spaces: `rule`, `rule.health_check`. */
function keyOf(name: string): string {
  return name.split(".").map((part) => part.trim().replace(/^["']|["']$/g, "")).join(".");
}

/**
 * Table headers, as line indexes, ignoring lines inside multi-line strings
 * (`"""` and `'''`); comments and one-line strings are read past, so a
 * delimiter in them opens nothing.
 */
function headers(lines: readonly string[]): Header[] {
  const found: Header[] = [];
  let open: '"""' | "'''" | null = null;
  lines.forEach((line, index) => {
    const header = open === null ? HEADER.exec(line) : null;
    if (header) {
      const key = keyOf(header[2]);
      found.push({
        line: index,
        rule: header[1] === "[[" && key === "rule",
        subtable: key.startsWith("rule."),
      });
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
  // Each line with its own line end, so that what stays is byte for byte what was.
  const raw = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  const lines = raw.map((line) => line.replace(/\r?\n$/, ""));
  const found = headers(lines);
  const header = found.filter((h) => h.rule)[index - 1];
  if (header === undefined) return null;
  // Its sub-tables (`[rule.health_check]`) are its own: the table ends at the next other header.
  const next = found.find((h) => h.line > header.line && !h.subtable)?.line ?? null;
  // Its own comment block: the comment lines right above its header.
  let start = header.line;
  while (start > 0 && COMMENT.test(lines[start - 1]) && !isHeader(found, start - 1)) start--;
  let end: number;
  if (next === null) {
    // The last table: to its last line of content; comments after it (rules set aside by
    // hand) stay, as do the blank lines before them.
    end = lines.length;
    while (end > header.line + 1 && (BLANK.test(lines[end - 1]) || COMMENT.test(lines[end - 1]))) {
      end--;
    }
    if (end === lines.length) {
      // Nothing after it: also the blank lines before it, so the file does not end in a gap.
      while (start > 0 && BLANK.test(lines[start - 1])) start--;
    }
  } else {
    // The next table's comment block stays with it; the blank lines before that block go.
    end = next;
    while (end > header.line + 1 && COMMENT.test(lines[end - 1])) end--;
  }
  return {
    text: [...raw.slice(0, start), ...raw.slice(end)].join(""),
    firstLine: start + 1,
    lastLine: end,
    removed: raw.slice(start, end).join("").replace(/\r?\n$/, ""),
  };
}

function isHeader(found: readonly Header[], line: number): boolean {
  return found.some((h) => h.line === line);
}
