/**
 * Traffic history per rule and per listener: one bucket per minute (new
 * sessions, distinct clients, bytes each way, errors, blocked) over a window
 * (`[server] history`, 24 hours by default). A bucket is taken from the
 * counters' growth when its minute ends, so relaying pays nothing per byte;
 * only distinct clients are noted as sessions start. Rings are allocated the
 * first time something happens: 32 bytes a minute, about 45 KiB a day per
 * rule or listener with traffic, nothing for those without. Pure: the clock
 * is passed in.
 *
 * @module
 */
import type { Counters } from "./stats.ts";
import { total } from "./stats.ts";

/** One minute of one rule or listener. */
export interface Bucket {
  /** Start of the minute (epoch ms). */
  readonly minute: number;
  readonly sessions: number;
  readonly clients: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly errors: number;
  readonly blocked: number;
  /** The minute under way: what it holds so far (the last bucket only). */
  readonly partial?: true;
}

const MINUTE = 60_000;
/** Distinct clients counted per minute at most (a flood does not grow memory). */
const MAX_CLIENTS_PER_MINUTE = 65_536;

/** The minute `now` falls in. */
export function minuteOf(now: number): number {
  return Math.floor(now / MINUTE) * MINUTE;
}

/** A ring of minutes for one rule or listener. */
class Ring {
  readonly counts: Uint32Array; // sessions, clients, errors, blocked
  readonly bytes: Float64Array; // up, down
  /** The minute in slot 0's position of the ring: slot = (minute / MINUTE) % length. */
  newest = 0;
  readonly clients = new Set<string>();
  /** Counter values when the current minute began. */
  base = { total: 0, errors: 0, blocked: 0, up: 0, down: 0 };

  constructor(readonly length: number, counters: Counters | undefined, now: number) {
    this.counts = new Uint32Array(length * 4);
    this.bytes = new Float64Array(length * 2);
    this.newest = minuteOf(now);
    if (counters) this.base = snapshot(counters);
  }

  #slot(minute: number): number {
    return (minute / MINUTE) % this.length;
  }

  /** Closes the minutes up to the one containing `now`, from the counters' growth. */
  advance(now: number, counters: Counters | undefined): void {
    const current = minuteOf(now);
    if (current === this.newest) return;
    // The minute that ended gets what the counters grew by; minutes skipped stay empty.
    const grown = counters ? snapshot(counters) : this.base;
    const slot = this.#slot(this.newest);
    this.counts[slot * 4] = grown.total - this.base.total;
    this.counts[slot * 4 + 1] = this.clients.size;
    this.counts[slot * 4 + 2] = grown.errors - this.base.errors;
    this.counts[slot * 4 + 3] = grown.blocked - this.base.blocked;
    this.bytes[slot * 2] = grown.up - this.base.up;
    this.bytes[slot * 2 + 1] = grown.down - this.base.down;
    this.base = grown;
    this.clients.clear();
    const steps = Math.min(this.length, (current - this.newest) / MINUTE);
    for (let i = 1; i < steps; i++) this.#clear(this.newest + i * MINUTE);
    this.newest = current;
    this.#clear(current);
  }

  /** Puts back a closed minute kept across a restart, if the ring still covers it. */
  restore(bucket: Bucket): void {
    const { minute } = bucket;
    if (minute % MINUTE !== 0 || minute >= this.newest) return;
    if (minute <= this.newest - this.length * MINUTE) return;
    const slot = this.#slot(minute);
    this.counts[slot * 4] = bucket.sessions;
    this.counts[slot * 4 + 1] = bucket.clients;
    this.counts[slot * 4 + 2] = bucket.errors;
    this.counts[slot * 4 + 3] = bucket.blocked;
    this.bytes[slot * 2] = bucket.bytes_up;
    this.bytes[slot * 2 + 1] = bucket.bytes_down;
  }

  #clear(minute: number): void {
    const slot = this.#slot(minute);
    this.counts.fill(0, slot * 4, slot * 4 + 4);
    this.bytes.fill(0, slot * 2, slot * 2 + 2);
  }

  /**
   * Closed minutes, oldest first, at most `limit`, then the minute under way
   * (`partial`): a newcomer sees traffic at once, not a minute later.
   */
  buckets(limit: number, now: number, counters: Counters | undefined): Bucket[] {
    const current = minuteOf(now);
    const count = Math.min(limit, this.length - 1);
    const out: Bucket[] = [];
    for (let i = count; i >= 0; i--) {
      const minute = current - i * MINUTE;
      if (minute > this.newest || minute <= this.newest - this.length * MINUTE) {
        out.push(i === 0 ? { ...empty(minute), partial: true } : empty(minute));
        continue;
      }
      if (minute === this.newest) {
        // Not closed yet (no traffic since it ended, or the minute under way): what it holds so far.
        const grown = counters ? snapshot(counters) : this.base;
        out.push({
          minute,
          sessions: grown.total - this.base.total,
          clients: this.clients.size,
          bytes_up: grown.up - this.base.up,
          bytes_down: grown.down - this.base.down,
          errors: grown.errors - this.base.errors,
          blocked: grown.blocked - this.base.blocked,
          ...(i === 0 ? { partial: true as const } : {}),
        });
        continue;
      }
      const slot = this.#slot(minute);
      out.push({
        minute,
        sessions: this.counts[slot * 4],
        clients: this.counts[slot * 4 + 1],
        errors: this.counts[slot * 4 + 2],
        blocked: this.counts[slot * 4 + 3],
        bytes_up: this.bytes[slot * 2],
        bytes_down: this.bytes[slot * 2 + 1],
      });
    }
    return out;
  }
}

function empty(minute: number): Bucket {
  return { minute, sessions: 0, clients: 0, bytes_up: 0, bytes_down: 0, errors: 0, blocked: 0 };
}

function snapshot(c: Counters) {
  return {
    total: c.total,
    errors: c.errors,
    blocked: total(c.blocked),
    up: c.bytesUp,
    down: c.bytesDown,
  };
}

/** Histories of every rule and listener, by name or key. */
export class History {
  readonly #rings = new Map<string, Ring>();
  /** Minutes kept. */
  readonly minutes: number;

  constructor(windowMs: number) {
    // One more than the window: the minute under way.
    this.minutes = Math.max(2, Math.round(windowMs / MINUTE) + 1);
  }

  /** A session of `key` started (rule `rule:NAME` or listener `listener:KEY`) from `client`. */
  sessionStarted(key: string, client: string, now: number, counters: Counters | undefined): void {
    const ring = this.#ring(key, now, counters);
    ring.advance(now, counters);
    if (ring.clients.size < MAX_CLIENTS_PER_MINUTE) ring.clients.add(client);
  }

  /** Something else happened to `key` (a refusal, an error): make sure it has a ring. */
  touched(key: string, now: number, counters: Counters | undefined): void {
    this.#ring(key, now, counters).advance(now, counters);
  }

  #ring(key: string, now: number, counters: Counters | undefined): Ring {
    let ring = this.#rings.get(key);
    // Counting starts now: what the counters held before belongs to no minute.
    if (!ring) this.#rings.set(key, ring = new Ring(this.minutes, counters, now));
    return ring;
  }

  /** Closes minutes that ended, for every ring (called about once a minute). */
  advance(now: number, counters: (key: string) => Counters | undefined): void {
    for (const [key, ring] of this.#rings) ring.advance(now, counters(key));
  }

  /**
   * The last `limit` closed minutes of `key`, oldest first, and the minute
   * under way (`partial`); empty minutes for a key without history.
   */
  buckets(key: string, limit: number, now: number, counters: Counters | undefined): Bucket[] {
    const ring = this.#rings.get(key);
    const count = Math.max(0, Math.min(limit, this.minutes - 1));
    if (!ring) {
      const current = minuteOf(now);
      return [
        ...Array.from({ length: count }, (_, i) => empty(current - (count - i) * MINUTE)),
        { ...empty(current), partial: true },
      ];
    }
    return ring.buckets(count, now, counters);
  }

  /**
   * The minutes of every key that had any, for keeping across a restart
   * (`[server] state`): minutes with nothing are left out.
   */
  export(now: number, counters: (key: string) => Counters | undefined): Record<string, Bucket[]> {
    const out: Record<string, Bucket[]> = {};
    for (const [key, ring] of this.#rings) {
      // The minute under way too, as far as it got: a restart in a later minute keeps it.
      const kept = ring.buckets(this.minutes - 1, now, counters(key))
        .filter((b) =>
          b.sessions > 0 || b.blocked > 0 || b.errors > 0 || b.bytes_up > 0 || b.bytes_down > 0
        )
        .map(({ partial: _, ...bucket }) => bucket);
      if (kept.length > 0) out[key] = kept;
    }
    return out;
  }

  /** Puts back minutes kept across a restart; those outside the window now are left out. */
  import(saved: Readonly<Record<string, readonly Bucket[]>>, now: number): void {
    for (const [key, buckets] of Object.entries(saved)) {
      const ring = this.#ring(key, now, undefined);
      for (const bucket of buckets) ring.restore(bucket);
    }
  }

  /** Forgets keys no longer wanted (rules and listeners removed by a reload). */
  keep(keys: ReadonlySet<string>): void {
    for (const key of this.#rings.keys()) if (!keys.has(key)) this.#rings.delete(key);
  }

  /** Keys with a ring. */
  get size(): number {
    return this.#rings.size;
  }
}
