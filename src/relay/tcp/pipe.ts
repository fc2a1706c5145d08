/**
 * One direction of a TCP relay: read from one connection, write everything
 * to the other, pass the end of stream on as a half-close.
 *
 * While a write is under way, the next read is already issued (into a second
 * buffer): so a reset or close of the source is noticed even while the
 * destination does not read, and reading and writing overlap. At most one
 * read and one write are in flight per direction: a slow reader holds back the
 * fast writer, and memory stays at two buffers per direction.
 *
 * Buffers: a direction waits on a 2 KiB buffer (a pending `read()` holds its
 * buffer, so this is what an idle connection costs) and reads into 256 KiB
 * ones while data streams, as long as the memory budget allows (docs/PLATFORM.md).
 *
 * Plain read/write loops, not streams: `readable.pipeTo` closes the whole
 * socket at EOF and so breaks half-close (denoland/deno#22258).
 *
 * @module
 */
import type { Bandwidth } from "../bandwidth.ts";
import { BufferPool, relayBuffers } from "../buffer_pool.ts";
import { coarseNow } from "../clock.ts";
import { describeIoError } from "../errors.ts";
import type { RelayConn } from "./conn.ts";

const SMALL_BUFFER = 1024;
const LARGE_BUFFER = 256 * 1024;
const smallBuffers = new BufferPool(SMALL_BUFFER, 4_096);
const largeBuffers = new BufferPool(LARGE_BUFFER, 64, relayBuffers);

/** An I/O error, with the side of the relay it happened on. */
export class PipeError extends Error {
  constructor(readonly side: "source" | "destination", cause: unknown) {
    super(describeIoError(cause), { cause });
  }

  /** Whether the peer ended the connection abortively (a reset). */
  get isReset(): boolean {
    return this.cause instanceof Deno.errors.ConnectionReset ||
      this.cause instanceof Deno.errors.BrokenPipe;
  }

  /** Whether the connection was aborted on the peer's side (ECONNABORTED). */
  get isAborted(): boolean {
    return this.cause instanceof Deno.errors.ConnectionAborted;
  }
}

/** What a direction tells its session, and what the session watches. */
export class Direction {
  /** Monotonic time of the last completed read or write. */
  lastActivity = coarseNow();
  /** Monotonic time the pending write started, or 0 when none is pending (stall detection). */
  writingSince = 0;
  /**
   * Whether data read is waiting to be written: a write is pending or the
   * rule's bandwidth holds it back. Such a direction is not idle; waiting
   * for its turn under the bandwidth is no stall either.
   */
  busy = false;
  /** Whether this direction's source has ended and the end was passed on. */
  ended = false;

  constructor(
    /** Bytes written to the destination. */
    readonly delivered: (bytes: number) => void,
    /** The source failed while the loop was busy writing (it does not read then). */
    readonly sourceFailed: (error: PipeError) => void,
    /** The rule's bandwidth for this direction, or null. */
    readonly bandwidth: Bandwidth | null = null,
    /** Aborts a wait for the bandwidth when the session closes. */
    readonly closing?: AbortSignal,
  ) {}
}

/** What a read resolves to when it failed (the error is kept aside). */
const FAILED = -1;

function release(buffer: Uint8Array): void {
  (buffer.length === LARGE_BUFFER ? largeBuffers : smallBuffers).give(buffer);
}

/**
 * Copies `source` to `destination` until `source` ends, then half-closes
 * `destination` (unless `other` has ended too: then the session closes both).
 * Throws {@linkcode PipeError} on an I/O error either side.
 */
export async function pipe(
  source: RelayConn,
  destination: RelayConn,
  state: Direction,
  other: Direction,
): Promise<void> {
  let failure: unknown;
  const read = (into: Uint8Array) =>
    source.read(into).then((n) => n, (error) => {
      failure = error;
      if (state.busy) state.sourceFailed(new PipeError("source", error));
      return FAILED;
    });
  let buffer = smallBuffers.take();
  let reading = read(buffer);
  /** The buffer the pending read fills, when that is not `buffer`. */
  let ahead: Uint8Array | null = null;
  try {
    for (;;) {
      const n = await reading;
      if (n === FAILED) throw new PipeError("source", failure);
      if (n === null) break;
      const now = coarseNow();
      state.lastActivity = now;
      // A full read means more is waiting: read on into a large buffer if the budget allows.
      // A short one means the stream paused: wait on a small one.
      const next = (n === buffer.length ? largeBuffers.tryTake() : null) ?? smallBuffers.take();
      reading = read(next);
      ahead = next;
      state.busy = true;
      const bandwidth = state.bandwidth;
      try {
        for (let written = 0; written < n;) {
          // Under a bandwidth limit, write in slices, each waiting its turn (the read pauses).
          const end = bandwidth ? Math.min(n, written + bandwidth.slice) : n;
          if (bandwidth) await bandwidth.take(end - written, state.closing);
          state.writingSince = coarseNow();
          const wrote = await destination.write(buffer.subarray(written, end));
          state.writingSince = 0;
          written += wrote;
          state.lastActivity = coarseNow();
          state.delivered(wrote);
        }
      } catch (error) {
        throw new PipeError("destination", error);
      } finally {
        state.writingSince = 0;
        state.busy = false;
      }
      release(buffer);
      buffer = next;
      ahead = null;
    }
  } finally {
    release(buffer);
    // A read still pending keeps its buffer until the session closes the socket.
    if (ahead) {
      const pending = ahead;
      reading.then(() => release(pending));
    }
  }
  state.ended = true;
  // Both directions done: the session closes both sockets now, no half-close needed.
  if (other.ended) return;
  try {
    await destination.closeWrite();
  } catch (error) {
    // The destination already went away completely; its own direction reports that.
    if (!(error instanceof Deno.errors.NotConnected)) throw new PipeError("destination", error);
  }
}
