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

/** Buffer for a direction that has moved little: idle sessions stay small. */
const SMALL_BUFFER = 16 * 1024;
/** Buffer once a read fills the small one: bulk transfers go fast. */
const LARGE_BUFFER = 256 * 1024;

/** An I/O error, with the side of the relay it happened on. */
export class PipeError extends Error {
  constructor(readonly side: "source" | "destination", cause: unknown) {
    super(describeIoError(cause), { cause });
  }
}

/**
 * Copies `source` to `destination` until `source` ends, then half-closes
 * `destination`. Throws {@linkcode PipeError} on an I/O error either side.
 */
export async function pipe(
  source: Deno.Conn,
  destination: Deno.Conn,
  onRead: (bytes: number, data: Uint8Array) => void,
): Promise<void> {
  let buffer = new Uint8Array(SMALL_BUFFER);
  for (;;) {
    let n: number | null;
    try {
      n = await source.read(buffer);
    } catch (error) {
      throw new PipeError("source", error);
    }
    if (n === null) break;
    onRead(n, buffer);
    try {
      for (let written = 0; written < n;) {
        written += await destination.write(buffer.subarray(written, n));
      }
    } catch (error) {
      throw new PipeError("destination", error);
    }
    if (n === buffer.length && buffer.length < LARGE_BUFFER) {
      buffer = new Uint8Array(LARGE_BUFFER);
    }
  }
  try {
    await destination.closeWrite();
  } catch (error) {
    // The destination already went away completely; its own direction reports that.
    if (!(error instanceof Deno.errors.NotConnected)) {
      throw new PipeError("destination", error);
    }
  }
}

/** A short, stable description of a socket error. */
export function describeIoError(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (error instanceof Deno.errors.BrokenPipe) return "broken pipe";
  if (error instanceof Deno.errors.ConnectionAborted) {
    return "connection aborted";
  }
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  if (error instanceof Error) {
    return error.message.replace(/ \(os error \d+\)$/, "");
  }
  return String(error);
}
