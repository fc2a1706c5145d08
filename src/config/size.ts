/**
 * Sizes and rates as written in rule files: `"64KiB"`, `"128MiB"`, `"1GB"`,
 * `"10MiB/s"`, `"800kbit/s"`, or a plain number of bytes. Pure.
 *
 * @module
 */
import { describe } from "./describe.ts";

const UNIT_BYTES: Record<string, number> = {
  b: 1,
  kb: 1_000,
  mb: 1_000_000,
  gb: 1_000_000_000,
  kib: 1_024,
  mib: 1_024 ** 2,
  gib: 1_024 ** 3,
  kbit: 125,
  mbit: 125_000,
  gbit: 125_000_000,
};
const SIZE = /^(\d+(?:\.\d+)?)\s*([a-z]+)?$/i;
/** The largest size accepted: 1 TiB. */
const MAX_BYTES = 1_024 ** 4;

function parseAmount(value: unknown, expected: string, bitsAllowed: boolean): number | {
  error: string;
} {
  if (typeof value === "number" && Number.isFinite(value)) {
    if (value < 0 || !Number.isInteger(value)) return { error: `${expected}, got ${value}` };
    return value;
  }
  if (typeof value !== "string") return { error: `${expected}, got ${describe(value)}` };
  const match = SIZE.exec(value.trim());
  const unit = (match?.[2] ?? "b").toLowerCase();
  const factor = UNIT_BYTES[unit];
  if (!match || factor === undefined || (!bitsAllowed && unit.endsWith("bit"))) {
    return { error: `${expected}, got "${value}"` };
  }
  const bytes = Math.round(Number(match[1]) * factor);
  if (bytes > MAX_BYTES) return { error: `"${value}" is out of range (at most 1 TiB)` };
  return bytes;
}

/** Parses a size in bytes (`"64MiB"`), or says why it cannot. */
export function parseSize(value: unknown): number | { error: string } {
  return parseAmount(
    value,
    'expected a size such as "64MiB", "512KiB", "1GB" or a number of bytes',
    false,
  );
}

/** Parses a rate in bytes per second (`"10MiB/s"`, `"100Mbit/s"`), or says why it cannot. */
export function parseRate(value: unknown): number | { error: string } {
  const expected = 'expected a rate such as "10MiB/s", "500KiB/s" or "100Mbit/s" (a unit and "/s")';
  if (typeof value !== "string" || !/\/s$/i.test(value.trim())) {
    return { error: `${expected}, got ${describe(value)}` };
  }
  const bytes = parseAmount(value.trim().replace(/\/s$/i, ""), expected, true);
  if (typeof bytes === "number" && bytes === 0) return { error: `"${value}" must be more than 0` };
  return typeof bytes === "number" || !/^expected/.test(bytes.error)
    ? bytes
    : { error: `${expected}, got "${value}"` };
}

/** `128 MiB`, `1.5 GiB`, `900 B`. */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : Math.round(value * 10) / 10} ${units[unit]}`;
}
