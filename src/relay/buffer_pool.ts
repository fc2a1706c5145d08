/**
 * Relay buffers, reused. Large buffers (for data that streams, and for UDP
 * receives that must hold any datagram) are counted against one memory
 * budget shared by TCP and UDP; when it is spent, relays fall back to small
 * buffers (TCP: slower, never unbounded; UDP: counted where a reply did not
 * fit). Small buffers are cheap and only kept for reuse.
 *
 * @module
 */
import { DEFAULT_BUFFER_MEMORY } from "../config/types.ts";

/** Bytes of large buffers lent out, against a limit the operator sets. */
export class MemoryBudget {
  #inUse = 0;
  /** Times a large buffer was wanted and the budget was spent. */
  refused = 0;

  constructor(public limitBytes: number) {}

  /** Reserves `bytes` if the budget allows. */
  tryReserve(bytes: number): boolean {
    if (this.#inUse + bytes > this.limitBytes) {
      this.refused++;
      return false;
    }
    this.#inUse += bytes;
    return true;
  }

  release(bytes: number): void {
    this.#inUse -= bytes;
  }

  /** Bytes lent out now. */
  get inUse(): number {
    return this.#inUse;
  }
}

/** Equal-sized buffers, kept for reuse (at most `maxFree` of them). */
export class BufferPool {
  readonly #free: Uint8Array[] = [];

  /**
   * @param size bytes per buffer
   * @param maxFree buffers kept for reuse at most; beyond that they are left to the GC
   * @param budget when given, every buffer lent out counts against it
   */
  constructor(
    readonly size: number,
    readonly maxFree: number,
    readonly budget?: MemoryBudget,
  ) {}

  /** A buffer (its contents are whatever the last user left), or null when the budget is spent. */
  tryTake(): Uint8Array | null {
    if (this.budget && !this.budget.tryReserve(this.size)) return null;
    return this.#free.pop() ?? new Uint8Array(this.size);
  }

  /** A buffer; only for pools without a budget. */
  take(): Uint8Array {
    return this.tryTake()!;
  }

  /** Returns a buffer taken from this pool. */
  give(buffer: Uint8Array): void {
    this.budget?.release(this.size);
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
  }
}

/** The budget every relay's large buffers count against (`[server] buffer_memory`). */
export const relayBuffers = new MemoryBudget(DEFAULT_BUFFER_MEMORY);
