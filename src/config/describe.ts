/** A short description of a TOML value, for error messages. */
export function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null || value === undefined) return "nothing";
  if (value instanceof Date) return "a date";
  if (typeof value === "object") return "a table";
  if (typeof value === "string") return JSON.stringify(clip(value));
  return `${typeof value} ${String(value)}`;
}

/** Long text cut to `max` characters with an ellipsis: messages stay readable. */
export function clip(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** Text cut in the middle to at most about `max` characters, keeping its start and its end. */
export function clipMiddle(text: string, max: number): string {
  if (text.length <= max) return text;
  const tail = Math.floor(max / 3);
  return `${text.slice(0, max - tail)}…${text.slice(-tail)}`;
}

/** `1 rule`, `3 rules`. */
export function countOf(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
