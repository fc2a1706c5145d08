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

  /**
   * @param size bytes per buffer
   * @param maxFree buffers kept for reuse at most; beyond that they are left to the GC
   */
  constructor(readonly size: number, readonly maxFree: number) {}

  /** A buffer of `size` bytes (its contents are whatever the last user left). */
  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.size);
  }

  /** Returns a buffer taken from this pool. */
  give(buffer: Uint8Array): void {
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
  }

  /** Buffers waiting for reuse. */
  get available(): number {
    return this.#free.length;
  }
}
