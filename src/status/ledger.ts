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

/** An entry in the order clients were last seen: a doubly linked list. */
interface Slot {
  readonly entry: ClientEntry;
  prev: Slot | null;
  next: Slot | null;
}

/**
 * The clients of one rule. Those not in session are in a linked list in the
 * order they were last seen, beside the Map: moving one to the end and
 * evicting from the front are O(1). A client in session is not in the list
 * (it cannot be evicted, and it is seen now); when its last session ends it
 * goes to the end. (A Map alone keeps insertion order, but deleting from its
 * front leaves holes that every later walk from the front steps over.)
 */
export class ClientLedger {
  readonly #slots = new Map<string, Slot>();
  #oldest: Slot | null = null;
  #newest: Slot | null = null;
  /** Entries evicted to stay within `capacity`. */
  evicted = 0;

  constructor(public capacity: number) {}

  /** A session of `address` started at `now` through `via`; the entry to add its bytes to. */
  started(address: string, via: string, now: number): ClientEntry {
    const slot = this.#touch(address, via, now);
    // In session: out of the order of eviction until its last session ends.
    if (slot.entry.active === 0 && this.#linked(slot)) this.#unlink(slot);
    slot.entry.sessions++;
    slot.entry.active++;
    this.#evict();
    return slot.entry;
  }

  /** `address` was refused at `now` through `via`. */
  refused(address: string, via: string, now: number): void {
    const slot = this.#touch(address, via, now);
    slot.entry.refused++;
    if (slot.entry.active === 0) {
      if (this.#linked(slot)) this.#unlink(slot);
      this.#append(slot);
    }
    this.#evict();
  }

  /** A session of `entry` ended at `now`: the client was there until then. */
  ended(entry: ClientEntry, now: number): void {
    entry.active = Math.max(0, entry.active - 1);
    entry.lastSeen = Math.max(entry.lastSeen, now);
    let slot = this.#slots.get(entry.address);
    if (slot === undefined) {
      // Not held (a ledger that was replaced, or resized down): it comes back, seen now.
      slot = { entry, prev: null, next: null };
      this.#slots.set(entry.address, slot);
    } else if (slot.entry !== entry) {
      // Forgotten and back with a newer entry meanwhile: the newer one says it.
      slot.entry.lastSeen = Math.max(slot.entry.lastSeen, now);
    }
    if (slot.entry.active === 0) {
      if (this.#linked(slot)) this.#unlink(slot);
      this.#append(slot);
    }
    this.#evict();
  }

  /**
   * The clients seen at or after `since` (epoch ms), or with a session live
   * now, most recently seen first.
   */
  list(since = -Infinity): ClientEntry[] {
    const out: ClientEntry[] = [];
    for (const { entry } of this.#slots.values()) {
      if (entry.lastSeen >= since || entry.active > 0) out.push(entry);
    }
    return out.sort((a, b) => b.lastSeen - a.lastSeen);
  }

  /** Distinct clients seen within `windowMs` before `now` (or live now). */
  countWithin(windowMs: number, now: number): number {
    let count = 0;
    for (const { entry } of this.#slots.values()) {
      if (now - entry.lastSeen <= windowMs || entry.active > 0) count++;
    }
    return count;
  }

  /** Puts back entries kept across a restart (oldest first), within the capacity. */
  restore(entries: readonly ClientEntry[], evicted: number): void {
    // The newest that fit, oldest first: never more held at once than the capacity.
    const newest = [...entries].sort((a, b) => b.lastSeen - a.lastSeen).slice(0, this.capacity);
    this.evicted += entries.length - newest.length;
    for (const entry of newest.reverse()) {
      if (this.#slots.has(entry.address)) continue;
      const slot = { entry: { ...entry, active: 0 }, prev: null, next: null };
      this.#slots.set(entry.address, slot);
      this.#append(slot);
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
    return this.#slots.size;
  }

  /** The slot of `address`, its times and `via` brought up to date (new: in the Map only). */
  #touch(address: string, via: string, now: number): Slot {
    const slot = this.#slots.get(address);
    if (slot) {
      const { entry } = slot;
      entry.lastSeen = Math.max(entry.lastSeen, now);
      entry.firstSeen = Math.min(entry.firstSeen, now);
      entry.via = via;
      return slot;
    }
    const created: Slot = {
      entry: {
        address,
        via,
        firstSeen: now,
        lastSeen: now,
        sessions: 0,
        refused: 0,
        bytesUp: 0,
        bytesDown: 0,
        active: 0,
      },
      prev: null,
      next: null,
    };
    this.#slots.set(address, created);
    return created;
  }

  #linked(slot: Slot): boolean {
    return slot.prev !== null || slot.next !== null || this.#oldest === slot;
  }

  #append(slot: Slot): void {
    slot.prev = this.#newest;
    slot.next = null;
    if (this.#newest) this.#newest.next = slot;
    else this.#oldest = slot;
    this.#newest = slot;
  }

  #unlink(slot: Slot): void {
    if (slot.prev) slot.prev.next = slot.next;
    else this.#oldest = slot.next;
    if (slot.next) slot.next.prev = slot.prev;
    else this.#newest = slot.prev;
    slot.prev = slot.next = null;
  }

  /**
   * Evicts the least recently seen down to the capacity, never a client in
   * session (they are not in the list): a ledger full of live clients holds
   * one entry per live client beyond its capacity.
   */
  #evict(): void {
    while (this.#slots.size > this.capacity && this.#oldest !== null) {
      const slot = this.#oldest;
      this.#unlink(slot);
      this.#slots.delete(slot.entry.address);
      this.evicted++;
    }
  }
}
