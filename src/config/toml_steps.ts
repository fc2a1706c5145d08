/**
 * TOML parsing in steps, so that a large rule file is parsed a part at a
 * time (see `work_steps.ts`). The text is cut before `[[rule]]` header lines
 * into parts of about `partChars`, each part parsed alone and the documents
 * joined. Whenever that could differ from parsing the whole (a part that does
 * not parse, a table defined in two parts, rules in the first part that a
 * `[[rule]]` could not follow), the whole text is parsed instead: its result,
 * or its error with the right line and column, is the answer.
 *
 * Why a cut is safe: a part that parses ends between statements (a string or
 * array left open across the cut makes it fail), a header line starts a new
 * table whatever came before it, and each later part's `[[rule]]` tables
 * append, in order, to rules the first part showed may be appended to.
 *
 * @module
 */
import { parse } from "smol-toml";
import type { Steps } from "./work_steps.ts";

type Table = Record<string, unknown>;

/** About how many characters of rule file one step parses. */
export const TOML_PART_CHARS = 64 * 1024;

const RULE_HEADER = "\n[[rule]]";

/** Parses `text` as TOML, a part per step; throws what `parse(text)` throws. */
export function* parseTomlSteps(text: string, partChars = TOML_PART_CHARS): Steps<Table> {
  if (text.length <= partChars) {
    return parse(text) as Table;
  }
  const joined: Table = Object.create(null); // as the parser makes its tables
  let first = true;
  for (const part of cutBeforeRules(text, partChars)) {
    let document: Table;
    try {
      document = parse(part) as Table;
    } catch {
      return parse(text) as Table;
    }
    // Later parts append to the first part's rules only if the parser would (rules
    // written as a value, `rule = [...]`, cannot be appended to): ask it.
    if (first && document.rule !== undefined && !appendable(part)) return parse(text) as Table;
    if (!join(joined, document)) return parse(text) as Table;
    first = false;
    yield;
  }
  return joined;
}

/** Whether a `[[rule]]` table may follow `part` (a document that parses). */
function appendable(part: string): boolean {
  try {
    parse(`${part}\n[[rule]]\n`);
    return true;
  } catch {
    return false;
  }
}

/** Adds `document`'s keys to `joined`; false if a key other than the rule array is in both. */
function join(joined: Table, document: Table): boolean {
  for (const [key, value] of Object.entries(document)) {
    const earlier = joined[key];
    if (earlier === undefined) joined[key] = value;
    else if (key === "rule" && Array.isArray(earlier) && Array.isArray(value)) {
      earlier.push(...value);
    } else return false;
  }
  return true;
}

/** Parts of `text` of about `partChars`, each after the first starting at a `[[rule]]` line. */
function* cutBeforeRules(text: string, partChars: number): Generator<string> {
  let start = 0;
  let from = partChars;
  while (from < text.length) {
    const at = text.indexOf(RULE_HEADER, from);
    if (at < 0) break;
    // Only a header alone on its line (a comment may follow).
    const after = text[at + RULE_HEADER.length];
    if (after !== undefined && !"\r\n \t#".includes(after)) {
      from = at + RULE_HEADER.length;
      continue;
    }
    yield text.slice(start, at + 1);
    start = at + 1;
    from = start + partChars;
  }
  yield text.slice(start);
}
