/**
 * One coarse timer for many sessions: every interval, each registered item
 * checks its own deadlines (idle, stalled writes). Cheaper than a timer per
 * session, and the interval bounds how late a deadline is noticed.
 *
 * @module
 */

/** Something with deadlines to check. */
export interface Sweepable {
  /** Checks deadlines at `now` (monotonic ms). */
  sweep(now: number): void;
}

/** Calls `sweep` on every registered item once per interval while any is registered. */
export class Sweeper {
  readonly #items = new Set<Sweepable>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(readonly intervalMs: number) {}

  add(item: Sweepable): void {
    this.#items.add(item);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#sweep(), this.intervalMs);
      Deno.unrefTimer(this.#timer);
    }
  }

  delete(item: Sweepable): void {
    this.#items.delete(item);
  }

  #sweep(): void {
    // Stopped here rather than in delete(): items come and go many times per
    // interval under load, and re-arming a timer each time costs what one saves.
    if (this.#items.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const now = performance.now();
    for (const item of [...this.#items]) item.sweep(now);
  }
}
