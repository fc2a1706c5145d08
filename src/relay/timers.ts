/**
 * Timers for any delay. `setTimeout` takes at most 2^31-1 ms (about 24.8
 * days); a longer delay fires after 1 ms. Longer waits are chained here.
 *
 * @module
 */

/** The longest delay one `setTimeout` honours. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Calls `callback` after `ms` (any length); returns a function that cancels it. */
export function setLongTimeout(callback: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout>;
  const arm = (left: number) => {
    timer = setTimeout(
      left > MAX_TIMER_MS ? () => arm(left - MAX_TIMER_MS) : callback,
      Math.min(left, MAX_TIMER_MS),
    );
  };
  arm(Math.max(0, ms));
  return () => clearTimeout(timer);
}

/** Resolves after `ms` (any length), or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const cancel = setLongTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      cancel();
      resolve();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * `work`, or what `late` says once `timeoutMs` has passed without it (no limit
 * when undefined). The timer is cancelled once either is done: a pending one
 * would keep `work`'s result alive (through the race) for its full length.
 */
export async function within<T>(
  work: Promise<T>,
  timeoutMs: number | undefined,
  late: () => T,
): Promise<T> {
  if (timeoutMs === undefined) return await work;
  const timer = new AbortController();
  try {
    return await Promise.race([work, sleep(timeoutMs, timer.signal).then(late)]);
  } finally {
    timer.abort();
  }
}
