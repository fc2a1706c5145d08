/**
 * One direction of a TCP relay: read from one connection, write everything to
 * the other, and pass the end of stream on as a half-close. Writes are awaited
 * before the next read, so a slow reader holds back the fast writer (memory
 * stays at one buffer per direction).
 *
 * Plain read/write loops, not streams: `readable.pipeTo` closes the whole
 * socket at EOF and so breaks half-close (denoland/deno#22258).
 *
 * @module
 */
import { BufferPool } from "../buffer_pool.ts";
import { describeIoError } from "../errors.ts";

/**
 * Buffer a direction waits with. A pending `read()` holds its buffer, so this
 * is what an idle connection costs: 2 KiB per direction keeps 5,000 idle
 * connections near 15 KiB each (bench/NOTES.md).
 */
const SMALL_BUFFER = 2 * 1024;
/** Buffer while data streams: 256 KiB moved bulk data fastest (docs/PLATFORM.md). */
const LARGE_BUFFER = 256 * 1024;
/** Large buffers kept for reuse across all connections: at most 16 MiB. */
const largeBuffers = new BufferPool(LARGE_BUFFER, 64);

/** An I/O error, with the side of the relay it happened on. */
export class PipeError extends Error {
  constructor(readonly side: "source" | "destination", cause: unknown) {
    super(describeIoError(cause), { cause });
  }
}

/**
 * Copies `source` to `destination` until `source` ends, then half-closes
 * `destination` (unless the other direction has ended too, when the caller
 * closes both). `delivered` is told every write that completed. Throws
 * {@linkcode PipeError} on an I/O error either side.
 */
export async function pipe(
  source: Deno.Conn,
  destination: Deno.Conn,
  delivered: (bytes: number) => void,
  otherDirectionDone: () => boolean,
): Promise<void> {
  const small = new Uint8Array(SMALL_BUFFER);
  // Borrowed while data streams: a read that fills the small buffer means more is
  // waiting; a large read that comes back short means the stream paused, so the
  // next (possibly long) wait happens on the small buffer again.
  let large: Uint8Array | null = null;
  try {
    for (;;) {
      const buffer = large ?? small;
      let n: number | null;
      try {
        n = await source.read(buffer);
      } catch (error) {
        throw new PipeError("source", error);
      }
      if (n === null) break;
      try {
        for (let written = 0; written < n;) {
          const wrote = await destination.write(buffer.subarray(written, n));
          written += wrote;
          delivered(wrote);
        }
      } catch (error) {
        throw new PipeError("destination", error);
      }
      if (large === null) {
        if (n === small.length) large = largeBuffers.take();
      } else if (n < large.length) {
        largeBuffers.give(large);
        large = null;
      }
    }
  } finally {
    if (large) largeBuffers.give(large);
  }
  // Both directions done: the session closes both sockets now, no half-close needed.
  if (otherDirectionDone()) return;
  try {
    await destination.closeWrite();
  } catch (error) {
    // The destination already went away completely; its own direction reports that.
    if (!(error instanceof Deno.errors.NotConnected)) throw new PipeError("destination", error);
  }
}
