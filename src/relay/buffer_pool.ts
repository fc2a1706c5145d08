/**
 * Large relay buffers, reused: a direction borrows one while data streams and
 * gives it back when the stream pauses, so idle connections hold only their
 * small buffers and bursts do not churn the garbage collector.
 *
 * @module
 */

/** A bounded pool of equal-sized buffers. */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  #outstanding = 0;

  /**
   * @param size bytes per buffer
   * @param maxFree buffers kept for reuse at most; beyond that they are left to the GC
   * @param maxOutstanding buffers lent out at once at most, for {@linkcode tryTake}
   */
  constructor(
    readonly size: number,
    readonly maxFree: number,
    readonly maxOutstanding = Infinity,
  ) {}

  /** A buffer of `size` bytes (its contents are whatever the last user left). */
  take(): Uint8Array {
    this.#outstanding++;
    return this.#free.pop() ?? new Uint8Array(this.size);
  }

  /** A buffer, or null when `maxOutstanding` are already lent out. */
  tryTake(): Uint8Array | null {
    return this.#outstanding < this.maxOutstanding ? this.take() : null;
  }

  /** Returns a buffer taken from this pool. */
  give(buffer: Uint8Array): void {
    this.#outstanding--;
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
  }
}
