/**
 * Rate limits for log events that untrusted clients can cause (refusals,
 * target errors): a few per key per window pass, the rest are counted and
 * reported in one line when the window ends. Memory is bounded: beyond
 * `maxKeys` keys, new keys share one overflow window. Pure: the clock is passed in.
 *
 * @module
 */

interface Window {
  start: number;
  passed: number;
  suppressed: number;
  /** What the events of this key were, for the summary line. */
  readonly what: string;
}

/** Events suppressed in a window that has ended. */
export interface Suppressed {
  readonly what: string;
  readonly count: number;
}

/** The key new events share once `maxKeys` windows are open. */
const OVERFLOW = "\u0000overflow";

/** Lets `burst` events per key through per window and counts the rest. */
export class EventGate {
  readonly #windows = new Map<string, Window>();

  constructor(
    readonly windowMs = 10_000,
    readonly burst = 1,
    readonly maxKeys = 4_096,
  ) {}

  /**
   * Whether an event with `key` may be logged at `now` (monotonic ms); `what`
   * describes it in the summary of what was suppressed.
   */
  pass(key: string, what: string, now: number): boolean {
    let window = this.#windows.get(key);
    if (window === undefined && this.#windows.size >= this.maxKeys) {
      key = OVERFLOW;
      window = this.#windows.get(key);
      what = "various clients and causes (too many to tell apart)";
    }
    if (window === undefined || now - window.start >= this.windowMs) {
      if (window && window.suppressed > 0) {
        // Its summary is still due: keep that count, start afresh.
        this.#pending.push({ what: window.what, count: window.suppressed });
      }
      this.#windows.set(key, { start: now, passed: 1, suppressed: 0, what });
      return true;
    }
    if (window.passed < this.burst) {
      window.passed++;
      return true;
    }
    window.suppressed++;
    return false;
  }

  readonly #pending: Suppressed[] = [];

  /** What was suppressed in windows that ended by `now`; forgets those windows. */
  expire(now: number): Suppressed[] {
    const ended = this.#pending.splice(0);
    for (const [key, window] of this.#windows) {
      if (now - window.start < this.windowMs) continue;
      if (window.suppressed > 0) ended.push({ what: window.what, count: window.suppressed });
      this.#windows.delete(key);
    }
    return ended;
  }
}
