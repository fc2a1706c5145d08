/**
 * Whether each target is up. Passive: consecutive failed connects of real
 * sessions mark a target down, then it rests (1 s, doubling to 60 s) before a
 * session may try it again; one success brings it back. Active (a rule's
 * `health_check`): a TCP connect every interval, `fall` failures in a row
 * mark it down, `rise` successes in a row up. State is kept by target
 * address, so it survives a reload for targets that stay. The clock is
 * passed in.
 *
 * @module
 */

/** Consecutive failed connects that mark a target down without active checks. */
export const PASSIVE_FALL = 3;
const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 60_000;

/** Target health as the main isolate knows it. */
export interface TargetStatus {
  readonly target: string;
  readonly up: boolean;
  /** While down: how long until sessions may try it again (ms). */
  readonly retryInMs: number;
}

/** One target's health. */
export class TargetHealth {
  up = true;
  /** Wall-clock time of the last change (epoch ms), for the status. */
  since = Date.now();
  failures = 0;
  successes = 0;
  /** The latest failure's cause. */
  lastError: string | null = null;
  /** Monotonic time before which a down target is not tried (passive back-off). */
  retryAt = 0;
  #backoff = 0;

  /** Whether a session may try it at `now`: up, or down and rested. */
  usable(now: number): boolean {
    return this.up || now >= this.retryAt;
  }

  /** A connect (a session's or a check's) succeeded. `rise` successes are needed while down. */
  succeeded(rise = 1): boolean {
    this.failures = 0;
    this.successes++;
    this.lastError = null;
    if (!this.up && this.successes >= rise) {
      this.up = true;
      this.since = Date.now();
      this.#backoff = 0;
      return true;
    }
    return false;
  }

  /** A connect failed at `now`; returns true when that marks the target down (it was up). */
  failed(error: string, now: number, fall = PASSIVE_FALL): boolean {
    this.successes = 0;
    this.failures++;
    this.lastError = error;
    let wentDown = false;
    if (this.up) {
      if (this.failures < fall) return false;
      this.up = false;
      this.since = Date.now();
      wentDown = true;
    }
    // Down: rest before sessions try it again, longer each time.
    this.#backoff = Math.min(
      MAX_BACKOFF_MS,
      this.#backoff === 0 ? FIRST_BACKOFF_MS : this.#backoff * 2,
    );
    this.retryAt = now + this.#backoff;
    return wentDown;
  }
}
