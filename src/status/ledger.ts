/**
 * The client ledger: per rule, every distinct client address that used it
 * (or, for a block rule, that it refused), with when it was first and last
 * seen, its sessions, refusals and bytes, and the listen address it reached.
 * It answers the question that decides when a rule can go: who still uses
 * it. Memory is bounded: at most `capacity` entries per rule; the least
 * recently seen are evicted first and counted (never one with a live
 * session). An entry is kept in a Map in the order it was last seen
 * (touching it moves it to the end), so eviction takes the first. Pure: the
 * clock is passed in.
 *
 * @module
 */

/** One client of one rule. */
export interface ClientEntry {
  /** The client's IP address (no port). */
  readonly address: string;
  /** The `ip:port` it last reached (which of the rule's listen addresses: new or old). */
  via: string;
  /** Epoch ms of its first and latest session (or refusal), or the end of its latest session. */
  firstSeen: number;
  lastSeen: number;
  /** Sessions started; refusals (limits, or a block rule). */
  sessions: number;
  refused: number;
  /** Bytes client to target and back, over its sessions. */
  bytesUp: number;
  bytesDown: number;
  /** Sessions live now. */
  active: number;
}

/** The clients of one rule. */
export class ClientLedger {
  readonly #entries = new Map<string, ClientEntry>();
  /** Entries evicted to stay within `capacity`. */
  evicted = 0;

  constructor(public capacity: number) {}

  /** A session of `address` started at `now` through `via`; the entry to add its bytes to. */
  started(address: string, via: string, now: number): ClientEntry {
    const entry = this.#touch(address, via, now);
    entry.sessions++;
    entry.active++;
    this.#evict();
    return entry;
  }

  /** `address` was refused at `now` through `via`. */
  refused(address: string, via: string, now: number): void {
    this.#touch(address, via, now).refused++;
    this.#evict();
  }

  /** A session of `entry` ended at `now`: the client was there until then. */
  ended(entry: ClientEntry, now: number): void {
    entry.active = Math.max(0, entry.active - 1);
    entry.lastSeen = Math.max(entry.lastSeen, now);
    // Evicted during the session, and the client came back since: the newer entry says it.
    const current = this.#entries.get(entry.address) ?? entry;
    current.lastSeen = Math.max(current.lastSeen, now);
    // Seen now: to the end of the order (back in, if it was evicted meanwhile).
    this.#entries.delete(entry.address);
    this.#entries.set(entry.address, current);
    this.#evict();
  }

  /**
   * The clients seen at or after `since` (epoch ms), or with a session live
   * now, most recently seen first.
   */
  list(since = -Infinity): ClientEntry[] {
    const out: ClientEntry[] = [];
    for (const entry of this.#entries.values()) {
      if (entry.lastSeen >= since || entry.active > 0) out.push(entry);
    }
    return out.sort((a, b) => b.lastSeen - a.lastSeen);
  }

  /** Distinct clients seen within `windowMs` before `now` (or live now). */
  countWithin(windowMs: number, now: number): number {
    let count = 0;
    for (const entry of this.#entries.values()) {
      if (now - entry.lastSeen <= windowMs || entry.active > 0) count++;
    }
    return count;
  }

  /** Puts back entries kept across a restart (oldest first), within the capacity. */
  restore(entries: readonly ClientEntry[], evicted: number): void {
    for (const entry of [...entries].sort((a, b) => a.lastSeen - b.lastSeen)) {
      if (this.#entries.has(entry.address)) continue;
      this.#entries.set(entry.address, { ...entry, active: 0 });
    }
    this.evicted += evicted;
    this.#evict();
  }

  /** Changes the capacity (a reload); evicts down to it. */
  resize(capacity: number): void {
    this.capacity = capacity;
    this.#evict();
  }

  /** Entries held. */
  get size(): number {
    return this.#entries.size;
  }

  #touch(address: string, via: string, now: number): ClientEntry {
    let entry = this.#entries.get(address);
    if (entry) {
      this.#entries.delete(address);
      entry.lastSeen = Math.max(entry.lastSeen, now);
      entry.firstSeen = Math.min(entry.firstSeen, now);
      entry.via = via;
    } else {
      entry = {
        address,
        via,
        firstSeen: now,
        lastSeen: now,
        sessions: 0,
        refused: 0,
        bytesUp: 0,
        bytesDown: 0,
        active: 0,
      };
    }
    this.#entries.set(address, entry);
    return entry;
  }

  /**
   * Evicts the least recently seen down to the capacity. A client with a
   * live session is being seen now: it goes to the end instead, so a ledger
   * full of live clients holds one entry per live client beyond its capacity.
   */
  #evict(): void {
    let kept = 0;
    while (this.#entries.size > this.capacity && kept < this.#entries.size) {
      const [address, entry] = this.#entries.entries().next().value!;
      this.#entries.delete(address);
      if (entry.active > 0) {
        this.#entries.set(address, entry);
        kept++;
      } else {
        this.evicted++;
      }
    }
  }
}
