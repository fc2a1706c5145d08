/**
 * A rule's bandwidth (`bandwidth = "10MiB/s"`): one budget per direction,
 * shared by the rule's sessions. Each transfer reserves its time slot in
 * arrival order (a virtual clock: the budget is free again at `ready`), so a
 * bulk transfer taking chunk after chunk does not keep a small exchange
 * waiting behind more than one chunk. TCP waits (its reads pause: backpressure,
 * never buffering); UDP datagrams over the budget are dropped. Pure but for
 * the clock and the timer passed in.
 *
 * @module
 */

/** How much may pass at once without waiting: a tenth of a second's worth. */
const BURST_S = 0.1;
/** A TCP write is cut into pieces of at most this long a share, so that others interleave. */
const SLICE_S = 0.05;

/** One direction's budget. */
export class Bandwidth {
  /** Monotonic time (ms) at which everything reserved so far has passed. */
  #ready = 0;

  /**
   * @param bytesPerSecond the rate
   * @param now the monotonic clock (ms)
   * @param sleep waits that long (ms)
   */
  constructor(
    readonly bytesPerSecond: number,
    readonly now: () => number = () => performance.now(),
    readonly sleep: (ms: number) => Promise<void> = (ms) =>
      new Promise((resolve) => setTimeout(resolve, ms)),
  ) {}

  /** Bytes a TCP direction writes between two reservations. */
  get slice(): number {
    return Math.max(1_024, Math.floor(this.bytesPerSecond * SLICE_S));
  }

  /** Reserves `bytes`; resolves when they may go. */
  async take(bytes: number): Promise<void> {
    const wait = this.#reserve(bytes);
    if (wait > 0) await this.sleep(wait);
  }

  /** Reserves `bytes` if they may go now (within the burst); false, reserving nothing, if not. */
  tryTake(bytes: number): boolean {
    const now = this.now();
    const start = Math.max(now, this.#ready);
    if (start + (bytes / this.bytesPerSecond) * 1000 - BURST_S * 1000 > now) return false;
    this.#ready = start + (bytes / this.bytesPerSecond) * 1000;
    return true;
  }

  /** Books `bytes` after what is booked already; returns how long to wait (ms). */
  #reserve(bytes: number): number {
    const now = this.now();
    const start = Math.max(now, this.#ready);
    this.#ready = start + (bytes / this.bytesPerSecond) * 1000;
    return this.#ready - BURST_S * 1000 - now;
  }
}
