/**
 * Writing log lines without ever holding up relaying or taking the process
 * down: lines wait in a bounded queue and one loop writes them out, batched.
 * A write that fails (stderr's reader went away, a full disk) is counted and
 * the lines dropped; so are lines beyond the queue's bound.
 *
 * @module
 */

/** How much text may wait to be written before new lines are dropped. */
const MAX_QUEUED_CHARS = 8 * 1024 * 1024;

/** What a writer could not write. */
export interface WriterHealth {
  /** Lines lost because a write failed. */
  readonly failed: number;
  /** Lines dropped because the output could not keep up. */
  readonly dropped: number;
  /** The latest failure, or null. */
  readonly lastError: string | null;
}

/** Where a writer's bytes go: `write` may write only part of them, like `Deno.Writer`. */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<number>;
  close?(): void;
}

/** A bounded, never-throwing line writer. */
export class LineWriter implements WriterHealth {
  #queue: string[] = [];
  #queuedChars = 0;
  #writing: Promise<void> | null = null;
  #closed = false;
  failed = 0;
  dropped = 0;
  lastError: string | null = null;

  /**
   * @param datagrams write each line on its own (syslog: one datagram per event)
   *   instead of joining what waits into one write
   */
  constructor(
    readonly name: string,
    readonly sink: ByteSink,
    readonly datagrams = false,
    readonly maxQueuedChars = MAX_QUEUED_CHARS,
  ) {}

  /** Queues one line (with its newline); returns at once. */
  push(line: string): void {
    if (this.#closed || this.#queuedChars + line.length > this.maxQueuedChars) {
      this.dropped++;
      return;
    }
    this.#queue.push(line);
    this.#queuedChars += line.length;
    this.#writing ??= this.#drain();
  }

  /** Resolves once every queued line is written (or counted as lost). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** Flushes, then closes the sink; later lines are dropped. */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    try {
      this.sink.close?.();
    } catch {
      // Already closed.
    }
  }

  async #drain(): Promise<void> {
    const encoder = new TextEncoder();
    try {
      while (this.#queue.length > 0) {
        const lines = this.#queue;
        this.#queue = [];
        this.#queuedChars = 0;
        for (const batch of this.datagrams ? lines : [lines.join("")]) {
          const bytes = encoder.encode(batch);
          try {
            for (let written = 0; written < bytes.length;) {
              written += await this.sink.write(bytes.subarray(written));
            }
          } catch (error) {
            this.failed += this.datagrams ? 1 : lines.length;
            this.lastError = (error as Error).message?.replace(/ \(os error \d+\)$/, "") ??
              String(error);
          }
        }
      }
    } finally {
      this.#writing = null;
    }
  }
}
