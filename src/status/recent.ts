/**
 * Distinct clients seen recently, for "is traffic arriving at the new address,
 * and from how many clients" over the last 1, 15 and 60 minutes.
 *
 * @module
 */

/** The longest window asked about; older sightings are forgotten. */
export const RECENT_HORIZON_MS = 60 * 60_000;

/** Last sighting per client address, oldest first, with bounded memory. */
export class RecentClients {
  readonly #lastSeen = new Map<string, number>();

  /** @param maxClients beyond this many, the longest-unseen clients are forgotten */
  constructor(readonly maxClients = 100_000) {}

  /** Records `client` at `now` (ms). */
  seen(client: string, now: number): void {
    this.#lastSeen.delete(client); // Re-insert: the map stays in time order.
    this.#lastSeen.set(client, now);
    for (const [oldest, at] of this.#lastSeen) {
      if (this.#lastSeen.size <= this.maxClients && now - at <= RECENT_HORIZON_MS) break;
      this.#lastSeen.delete(oldest);
    }
  }

  /** Distinct clients seen within `windowMs` before `now`. */
  countWithin(windowMs: number, now: number): number {
    let count = 0;
    for (const at of this.#lastSeen.values()) if (now - at <= windowMs) count++;
    return count;
  }
}
