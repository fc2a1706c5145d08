/**
 * Log lines as structured entries, for assertions on fields instead of text:
 * the JSON log of a subprocess and the records of an in-process daemon take
 * the same shape (`{time, level, event, rule, ...}` or `{time, level, message, ...}`).
 *
 * @module
 */

/** One log line, parsed. */
export type LogEntry = Record<string, unknown> & {
  readonly level: string;
  readonly event?: string;
  readonly message?: string;
};

/** What an entry must have: equal values, or text matching a pattern. */
export type EntryMatch = Readonly<Record<string, unknown>>;

/** Whether `entry` has every field of `match`. */
export function matches(entry: LogEntry, match: EntryMatch): boolean {
  return Object.entries(match).every(([key, want]) => {
    const have = entry[key];
    if (want instanceof RegExp) return typeof have === "string" && want.test(have);
    return Object.is(have, want) || JSON.stringify(have) === JSON.stringify(want);
  });
}

/** Parses a JSON log line; text that is not JSON becomes `{level: "text", message}`. */
export function parseEntry(line: string): LogEntry {
  try {
    const parsed = JSON.parse(line);
    if (parsed && typeof parsed === "object" && typeof parsed.level === "string") return parsed;
  } catch {
    // Not a JSON log line (a crash trace, a warning printed before logging starts).
  }
  return { level: "text", message: line };
}

/** Entries that arrive over time, and a way to wait for one. */
export class EntryLog {
  readonly #entries: LogEntry[] = [];
  readonly #waiters = new Set<() => void>();

  add(entry: LogEntry): void {
    this.#entries.push(entry);
    for (const wake of this.#waiters) wake();
  }

  /** Every entry so far. */
  all(): LogEntry[] {
    return [...this.#entries];
  }

  /** Every entry matching `match`. */
  filter(match: EntryMatch): LogEntry[] {
    return this.#entries.filter((entry) => matches(entry, match));
  }

  /** Waits for the `nth` (1-based) entry matching `match`; fails after `timeoutMs` with the log. */
  async waitFor(match: EntryMatch, timeoutMs = 10_000, nth = 1): Promise<LogEntry> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const found = this.filter(match);
      if (found.length >= nth) return found[nth - 1];
      if (Date.now() > end) {
        throw new Error(
          `no log entry matched ${describe(match)}; log:\n${
            this.#entries.map((e) => JSON.stringify(e)).join("\n")
          }`,
        );
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, 50);
        this.#waiters.add(wake);
      });
    }
  }
}

function describe(match: EntryMatch): string {
  return JSON.stringify(
    match,
    (_, value) => value instanceof RegExp ? value.toString() : value,
  );
}
