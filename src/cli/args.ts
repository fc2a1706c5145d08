/**
 * Command-line parsing shared by the subcommands, on `node:util` parseArgs
 * (strict: an unknown option is a usage error, never ignored).
 *
 * @module
 */
import { readWorkerCount } from "../config/load.ts";
import type { WorkerCount } from "../config/types.ts";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { parseDuration } from "../config/duration.ts";

/** A usage mistake: printed with a pointer to `--help`, exit code 2. */
export class UsageError extends Error {}

/** Parses `args` strictly against `options`; throws {@linkcode UsageError}. */
export function parseCommandArgs<T extends ParseArgsConfig["options"]>(
  command: string,
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals });
  } catch (error) {
    throw new UsageError(
      `${command}: ${(error as Error).message.replace(/\. To specify a positional.*$/s, "")}`,
    );
  }
}

/** Checks an option against its allowed values. */
export function choice<T extends string>(
  option: string,
  value: string | undefined,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(
    `${option} must be one of ${allowed.join(", ")}, got "${value}"`,
  );
}

/** Parses a duration option such as `--exit-after 30s`, or undefined when not given. */
export function durationOption(
  option: string,
  value: string | undefined,
  { allowZero = false } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value);
  if (typeof ms !== "number") throw new UsageError(`${option}: ${ms.error}`);
  if (ms === 0 && !allowZero) throw new UsageError(`${option}: must be more than 0`);
  return ms;
}

/** Shell-quotes a word when it needs it (for commands printed to be run again). */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'"'"'`)}'`;
}

/** Parses `--workers N|auto`, or undefined when not given. */
export function workersOption(value: string | undefined): WorkerCount | undefined {
  if (value === undefined) return undefined;
  return readWorkerCount(value, (message) => {
    throw new UsageError(`--workers: ${message}`);
  });
}
