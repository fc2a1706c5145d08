/**
 * The loop every listener runs: take the next connection or datagram, hand
 * it on, and survive failures.
 *
 * Two kinds of failure, told apart by the error's code:
 *
 * - One connection's own trouble (a client that connected and reset before
 *   the accept: ENOTCONN, ECONNABORTED, ECONNRESET, EPROTO, or EPERM from a
 *   firewall): skipped at once, so a flood of such connections, from any
 *   client, cannot hold the listener back.
 * - The process running short (EMFILE, ENFILE, ENOBUFS, ENOMEM) and anything
 *   unknown: the loop backs off (10 ms, doubling, at most
 *   {@linkcode MAX_BACKOFF_MS}) and tries again, saying so once per burst.
 *   The cap is short because nothing announces that a descriptor came free:
 *   polling at this rate costs nothing and serves again soon after.
 *
 * @module
 */
import { sleep } from "./timers.ts";

const FIRST_BACKOFF_MS = 10;
/** The longest wait between two tries while the process is short of resources. */
export const MAX_BACKOFF_MS = 100;

/** Error codes that concern a single connection, not the listener. */
const ONE_CONNECTION = new Set([
  "ENOTCONN",
  "ECONNABORTED",
  "ECONNRESET",
  "ECONNREFUSED",
  "EPROTO",
  "EPERM",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/** Whether an accept or receive error concerns one connection only (skip it, do not back off). */
export function concernsOneConnection(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string") return ONE_CONNECTION.has(code);
  return error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionRefused;
}

/** What the loop reports about failures. */
export interface ServeLoopHooks {
  /** True once the listener is closed: the loop ends and errors are expected. */
  closed(): boolean;
  /** The first failure of a burst (not called for a single connection's failure). */
  failing(error: unknown): void;
  /** Serving again after `failures` failures in a row. */
  recovered(failures: number): void;
  /** Waits `ms` (a timer; tests pass their own). */
  wait?(ms: number): Promise<void>;
}

/**
 * Calls `next` and then `handle` with its result until `hooks.closed()`.
 * `handle` may return a promise: the loop waits for it (UDP reuses its buffer).
 */
export async function serveLoop<T>(
  next: () => Promise<T>,
  handle: (item: T) => void | Promise<void>,
  hooks: ServeLoopHooks,
): Promise<void> {
  let backoff = 0;
  let failures = 0;
  while (!hooks.closed()) {
    let item: T;
    try {
      item = await next();
    } catch (error) {
      if (hooks.closed()) return;
      if (concernsOneConnection(error)) continue;
      if (failures++ === 0) hooks.failing(error);
      backoff = Math.min(MAX_BACKOFF_MS, backoff === 0 ? FIRST_BACKOFF_MS : backoff * 2);
      await (hooks.wait ?? sleep)(backoff);
      continue;
    }
    if (failures > 0) {
      hooks.recovered(failures);
      failures = 0;
      backoff = 0;
    }
    const handled = handle(item);
    if (handled) await handled;
  }
}
