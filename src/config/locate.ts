/**
 * Best-effort line numbers for keys of a rule file, so that a problem found
 * after parsing (a bad value, an unknown key) can still point at its line.
 * TOML parsers return values, not positions; a line scan is enough for the
 * three kinds of table a rule file has.
 *
 * @module
 */
import type { Steps } from "./work_steps.ts";

/** Section names: `server`, `defaults`, `rule#1`, `rule#2`, ... */
export type SectionLines = Map<
  string,
  { header: number; keys: Map<string, number> }
>;

const HEADER = /^\s*(\[\[?)\s*([A-Za-z0-9_-]+)\s*\]\]?\s*(#.*)?$/;
const KEY = /^\s*([A-Za-z0-9_-]+|"[^"]*")\s*=/;

/** Scans TOML text for section headers and the keys under them (1-based lines), in steps. */
export function* locateKeys(text: string): Steps<SectionLines> {
  const sections: SectionLines = new Map();
  let current: { header: number; keys: Map<string, number> } | undefined;
  let rules = 0;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (i % 2_048 === 2_047) yield;
    const line = lines[i];
    const header = HEADER.exec(line);
    if (header) {
      const isRule = header[1] === "[[" && header[2] === "rule";
      current = { header: i + 1, keys: new Map() };
      sections.set(isRule ? `rule#${++rules}` : header[2], current);
      continue;
    }
    const key = KEY.exec(line);
    if (key && current && !current.keys.has(key[1])) {
      current.keys.set(key[1].replace(/^"|"$/g, ""), i + 1);
    }
  }
  return sections;
}
