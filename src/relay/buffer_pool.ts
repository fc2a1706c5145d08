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

/**
 * Equal-sized buffers, kept for reuse (at most `maxFree` of them).
 *
 * A pool made to `shrinkWhenFree` hands the memory of the buffers it keeps
 * back to the system: each is a resizable ArrayBuffer, shrunk to nothing
 * while free and grown again when lent (measured: 2,048 such 64 KiB buffers
 * shrunk took RSS from 160 to 46 MiB at once, where ordinary buffers freed
 * after a burst stay in the process). Each costs two memory mappings, and a
 * process has 65,530 (`vm.max_map_count`), past which V8 aborts: so the pool
 * makes at most `maxFree` of them, keeps every one, and lends ordinary
 * buffers beyond that.
 */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  #resizable = 0;

  /**
   * @param size bytes per buffer
   * @param maxFree buffers kept for reuse at most; beyond that they are left to the GC
   * @param budget when given, every buffer lent out counts against it
   * @param shrinkWhenFree whether kept buffers give their memory back while free
   */
  constructor(
    readonly size: number,
    readonly maxFree: number,
    readonly budget?: MemoryBudget,
    readonly shrinkWhenFree = false,
  ) {}

  /** A buffer (its contents are whatever the last user left), or null when the budget is spent. */
  tryTake(): Uint8Array | null {
    if (this.budget && !this.budget.tryReserve(this.size)) return null;
    const kept = this.#free.pop();
    if (kept) {
      if (!this.shrinkWhenFree) return kept;
      try {
        (kept.buffer as ArrayBuffer).resize(this.size);
        return kept;
      } catch {
        // No memory to grow it into: as if the budget were spent (it stays kept).
        this.#free.push(kept);
        this.budget?.release(this.size);
        return null;
      }
    }
    if (this.shrinkWhenFree && this.#resizable < this.maxFree) {
      this.#resizable++;
      // A view without a length follows the buffer's size.
      return new Uint8Array(new ArrayBuffer(this.size, { maxByteLength: this.size }));
    }
    return new Uint8Array(this.size);
  }

  /** A buffer; only for pools without a budget. */
  take(): Uint8Array {
    return this.tryTake()!;
  }

  /** Returns a buffer taken from this pool (no operation may still be using it). */
  give(buffer: Uint8Array): void {
    this.budget?.release(this.size);
    if (this.shrinkWhenFree) {
      const memory = buffer.buffer as ArrayBuffer;
      if (!memory.resizable) return; // Lent beyond the resizable ones: left to the GC.
      memory.resize(0);
    }
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
  }
}

/** The budget every relay's large buffers count against (`[server] buffer_memory`). */
export const relayBuffers = new MemoryBudget(DEFAULT_BUFFER_MEMORY);
