/**
 * A coarse monotonic clock for the hot path. Relays note the time of every
 * read and write (for idle and stall deadlines, which are seconds long);
 * asking the runtime each time (`performance.now()` is an op) cost about 1%
 * of the time per relayed request. This clock is at most
 * {@linkcode COARSE_CLOCK_MS} behind.
 *
 * @module
 */

/** How far behind `performance.now()` the coarse clock may be. */
export const COARSE_CLOCK_MS = 50;

let current = 0;
let timer: ReturnType<typeof setInterval> | undefined;

/**
 * Monotonic ms, like `performance.now()`, at most {@linkcode COARSE_CLOCK_MS} old.
 * Current from the first read on, in every isolate: the clock starts ticking
 * then, and the first read takes the time itself (the first sessions after a
 * quiet start must not take the module's load as their last activity).
 */
export function coarseNow(): number {
  if (timer === undefined) {
    current = performance.now();
    timer = setInterval(() => current = performance.now(), COARSE_CLOCK_MS);
    Deno.unrefTimer(timer);
  }
  return current;
}
