/**
 * "At most once per key per interval", with bounded memory: what keeps a flood
 * of refused UDP datagrams from flooding the log (and the heap).
 *
 * @module
 */

/** Remembers when each key last passed; forgets keys older than the interval. */
export class OncePer {
  readonly #last = new Map<string, number>();

  /**
   * @param intervalMs how long a key stays quiet after it passed
   * @param maxKeys at most this many keys are remembered; beyond that, new keys
   *   do not pass until old ones age out (a flood is logged, not every source of it)
   */
  constructor(readonly intervalMs: number, readonly maxKeys = 4_096) {}

  /** Whether `key` may pass at `now` (ms); records it if so. */
  pass(key: string, now: number): boolean {
    const last = this.#last.get(key);
    if (last !== undefined && now - last < this.intervalMs) return false;
    if (last === undefined && this.#last.size >= this.maxKeys) {
      this.#prune(now);
      if (this.#last.size >= this.maxKeys) return false;
    }
    this.#last.delete(key); // Re-insert so the map stays in time order.
    this.#last.set(key, now);
    return true;
  }

  #prune(now: number): void {
    for (const [key, at] of this.#last) {
      if (now - at < this.intervalMs) break; // Insertion order is time order.
      this.#last.delete(key);
    }
  }
}
