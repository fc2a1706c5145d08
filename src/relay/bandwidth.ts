/**
 * A rule's bandwidth (`bandwidth = "10MiB/s"`): one budget per direction,
 * shared by the rule's sessions. Each transfer reserves its time slot in
 * arrival order (a virtual clock: the budget is free again at `ready`), so a
 * bulk transfer taking chunk after chunk does not keep a small exchange
 * waiting behind more than one chunk. TCP waits (its reads pause: backpressure,
 * never buffering), and a wait ends early when its session closes. UDP
 * datagrams over the budget are dropped; a datagram larger than the burst
 * still passes when the budget is not already booked beyond the burst: it
 * borrows against the future, and what follows waits (is dropped) until that
 * is paid off. Pure but for the clock and the timer passed in.
 *
 * @module
 */
import { sleep as timerSleep } from "./timers.ts";

/** A rule's bandwidth budgets, shared by every isolate. */
export interface SharedBudget {
  readonly rate: number;
  readonly up: SharedArrayBuffer;
  readonly down: SharedArrayBuffer;
}

/** How much may pass at once without waiting: a tenth of a second's worth. */
const BURST_S = 0.1;
/**
 * A TCP write is cut into pieces of at most this long a share, so that others
 * interleave, and a slow rate never books more than this far ahead per piece.
 */
const SLICE_S = 0.05;

/**
 * Where a budget keeps the time at which everything reserved so far has
 * passed: in the budget itself, or in shared memory when several isolates
 * (workers) take from one budget.
 */
export interface ReadyTime {
  load(): number;
  /** Sets `next` if the time is still `expected`; false if another taker came first. */
  replace(expected: number, next: number): boolean;
}

class LocalReadyTime implements ReadyTime {
  #ready = 0;
  load(): number {
    return this.#ready;
  }
  replace(_expected: number, next: number): boolean {
    this.#ready = next;
    return true;
  }
}

/**
 * The ready time in a `SharedArrayBuffer` (8 bytes, microseconds), for
 * budgets shared by isolates; pair it with {@linkcode sharedNow}.
 */
export class SharedReadyTime implements ReadyTime {
  readonly #cell: BigInt64Array;

  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(8)) {
    this.#cell = new BigInt64Array(buffer);
  }

  load(): number {
    return Number(Atomics.load(this.#cell, 0)) / 1000;
  }

  replace(expected: number, next: number): boolean {
    const was = BigInt(Math.round(expected * 1000));
    return Atomics.compareExchange(this.#cell, 0, was, BigInt(Math.round(next * 1000))) === was;
  }
}

/** Milliseconds since the epoch, finer than `Date.now()` (when a session started). */
export const epochNow = (): number => performance.timeOrigin + performance.now();

/**
 * The clock shared budgets are booked in: this isolate's monotonic clock plus a
 * fixed offset, the main isolate's `performance.now()` on every isolate. Each
 * isolate's `timeOrigin` is the wall clock when it started, so a clock step
 * between two starts would put their epoch clocks apart; this one cannot drift.
 */
let sharedOffset = 0;
export const sharedNow = (): number => performance.now() + sharedOffset;

/** In a worker: `mainNow` is the main isolate's {@linkcode sharedNow}, just sent. */
export function setSharedClock(mainNow: number): void {
  sharedOffset = mainNow - performance.now();
}

/** One direction's budget. */
export class Bandwidth {
  /**
   * @param bytesPerSecond the rate
   * @param now the monotonic clock (ms)
   * @param sleep waits that long (ms)
   * @param ready where the reservations are booked (shared between workers, or not)
   */
  constructor(
    readonly bytesPerSecond: number,
    readonly now: () => number = () => performance.now(),
    readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void> = timerSleep,
    readonly ready: ReadyTime = new LocalReadyTime(),
  ) {}

  /** A budget several isolates share through `buffer` (see {@linkcode SharedReadyTime}). */
  static shared(bytesPerSecond: number, buffer: SharedArrayBuffer): Bandwidth {
    return new Bandwidth(bytesPerSecond, sharedNow, undefined, new SharedReadyTime(buffer));
  }

  /** Bytes a TCP direction writes between two reservations: a slice's worth, at least one. */
  get slice(): number {
    return Math.max(1, Math.floor(this.bytesPerSecond * SLICE_S));
  }

  /** Reserves `bytes`; resolves when they may go, or at once when `signal` aborts. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const wait = this.#reserve(bytes);
    if (wait > 0 && !signal?.aborted) await this.sleep(wait, signal);
  }

  /**
   * Reserves `bytes` if the budget is not booked beyond the burst already;
   * false, reserving nothing, if it is. Whatever the size: a datagram larger
   * than the burst passes on an idle budget, and books the time it costs.
   */
  tryTake(bytes: number): boolean {
    for (;;) {
      const now = this.now();
      const ready = this.ready.load();
      if (ready - BURST_S * 1000 > now) return false;
      const next = Math.max(now, ready) + (bytes / this.bytesPerSecond) * 1000;
      if (this.ready.replace(ready, next)) return true;
    }
  }

  /** Books `bytes` after what is booked already; returns how long to wait (ms). */
  #reserve(bytes: number): number {
    for (;;) {
      const now = this.now();
      const ready = this.ready.load();
      const next = Math.max(now, ready) + (bytes / this.bytesPerSecond) * 1000;
      if (this.ready.replace(ready, next)) return next - BURST_S * 1000 - now;
    }
  }
}
