import { describe } from "./describe.ts";

/**
 * Durations as written in rule files: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, or a
 * plain number of seconds (TOML integer or float, or a numeric string).
 *
 * @module
 */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;

/** Parses a duration into milliseconds, or returns why it cannot. */
export function parseDuration(value: unknown): number | { error: string } {
  const expected = 'expected a duration such as "250ms", "10s", "5m", "1h" or a number of seconds';
  if (typeof value === "number" || typeof value === "bigint") {
    const seconds = Number(value);
    if (!Number.isFinite(seconds) || seconds < 0) {
      return { error: `${expected}, got ${value}` };
    }
    return Math.round(seconds * 1_000);
  }
  if (typeof value !== "string") {
    return { error: `${expected}, got ${describe(value)}` };
  }
  const match = DURATION.exec(value.trim());
  if (!match) return { error: `${expected}, got "${value}"` };
  const ms = Number(match[1]) * UNIT_MS[match[2] ?? "s"];
  if (!Number.isFinite(ms) || ms > 365 * 24 * 3_600_000) {
    return { error: `duration "${value}" is out of range (at most a year)` };
  }
  return Math.round(ms);
}

/**
 * A duration asked for on a command line or in a query (`--since`,
 * `?since=`): as {@linkcode parseDuration}, and a plain number of seconds
 * with no upper bound (further back than the clock goes means "all of it").
 */
export function parseLookback(text: string): number | { error: string } {
  return parseDuration(/^\d+$/.test(text) ? Number(text) : text);
}

/** Formats milliseconds the way a person reads them: `250ms`, `1.5s`, `2m`. */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${trim(ms / 1_000)}s`;
  if (ms < 3_600_000) return `${trim(ms / 60_000)}m`;
  return `${trim(ms / 3_600_000)}h`;
}

function trim(n: number): string {
  return String(Math.round(n * 10) / 10);
}
