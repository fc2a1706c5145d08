/**
 * A worker's events on their way to the main isolate: batched (one message
 * per few milliseconds, not one per event), each session's in order. Byte
 * counts are summed per session between events; a rule that logs `data`
 * gets every read as its own event.
 *
 * @module
 */
import type { FromWorker, WorkerEvent } from "./protocol.ts";

/** How long events may wait to be sent with others. */
export const BATCH_MS = 5;

/** Batches a worker's events. */
export class Outbox {
  #events: WorkerEvent[] = [];
  /** Bytes not sent yet, by session. */
  readonly #bytes = new Map<number, { up: number; down: number }>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly post: (message: FromWorker) => void) {}

  /** Queues an event; a session's summed bytes go first. */
  push(event: WorkerEvent): void {
    if ("id" in event) this.#takeBytes(event.id);
    this.#events.push(event);
    this.#schedule();
  }

  /** Counts bytes delivered by a session; `each`: send this read as its own event. */
  bytes(id: number, up: number, down: number, each: boolean): void {
    if (each) return this.push({ t: "bytes", id, up, down });
    const pending = this.#bytes.get(id);
    if (pending) {
      pending.up += up;
      pending.down += down;
    } else this.#bytes.set(id, { up, down });
    this.#schedule();
  }

  /** Sends what is queued now (a question the main isolate must answer soon). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const id of [...this.#bytes.keys()]) this.#takeBytes(id);
    if (this.#events.length === 0) return;
    const events = this.#events;
    this.#events = [];
    this.post({ t: "events", events });
  }

  #takeBytes(id: number): void {
    const pending = this.#bytes.get(id);
    if (!pending) return;
    this.#bytes.delete(id);
    this.#events.push({ t: "bytes", id, up: pending.up, down: pending.down });
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => this.flush(), BATCH_MS);
  }
}
