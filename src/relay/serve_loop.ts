/**
 * The loop every listener runs: take the next connection or datagram, hand
 * it on, and survive failures such as EMFILE (too many open files) by
 * backing off and trying again, saying so once per burst.
 *
 * @module
 */

const FIRST_BACKOFF_MS = 10;
const MAX_BACKOFF_MS = 1_000;

/** What the loop reports about failures. */
export interface ServeLoopHooks {
  /** True once the listener is closed: the loop ends and errors are expected. */
  closed(): boolean;
  /** The first failure of a burst. */
  failing(error: unknown): void;
  /** Serving again after `failures` failures in a row. */
  recovered(failures: number): void;
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
      if (failures++ === 0) hooks.failing(error);
      backoff = Math.min(MAX_BACKOFF_MS, backoff === 0 ? FIRST_BACKOFF_MS : backoff * 2);
      await new Promise((resolve) => setTimeout(resolve, backoff));
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
