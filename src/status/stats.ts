/**
 * Counters per rule and per listener: what the exit summary, SIGUSR2 and the
 * status endpoint report. Plain numbers updated in place; no I/O.
 *
 * @module
 */
import type { BlockReason, DropReason } from "../relay/session.ts";
import { ClientLedger } from "./ledger.ts";

/** Counters for one rule or one listener. */
export interface Counters {
  active: number;
  total: number;
  blocked: Partial<Record<BlockReason, number>>;
  errors: number;
  /** UDP datagrams not relayed, by cause. */
  dropped: Partial<Record<DropReason, number>>;
  bytesUp: number;
  bytesDown: number;
  /** Epoch ms of the first and latest session, or null before any. */
  firstSession: number | null;
  /** The client (`ip:port`) of the first session. */
  firstClient: string | null;
  lastSession: number | null;
  lastClient: string | null;
  /** The latest refused client (`ip:port`). */
  lastBlocked: string | null;
  /** Every client of the rule, with times and counts (rule counters only). */
  clients: ClientLedger | null;
}

/** Counters at zero. */
export function emptyCounters(clientCapacity: number | null = null): Counters {
  return {
    active: 0,
    total: 0,
    blocked: {},
    errors: 0,
    dropped: {},
    bytesUp: 0,
    bytesDown: 0,
    firstSession: null,
    firstClient: null,
    lastSession: null,
    lastClient: null,
    lastBlocked: null,
    // No ledger for listeners and targets, nor when [server] clients = 0.
    clients: clientCapacity === null || clientCapacity === 0
      ? null
      : new ClientLedger(clientCapacity),
  };
}

/** Counters of one rule on one listener (rule null: refused by no rule). */
export interface PairCounters {
  readonly rule: string | null;
  readonly listener: string;
  readonly counters: Counters;
}

/** Counters keyed by rule name, by listener key, and by both. */
export class Stats {
  readonly rules = new Map<string, Counters>();
  readonly listeners = new Map<string, Counters>();
  readonly pairs = new Map<string, PairCounters>();
  /** Counters of one rule's sessions on one of its targets, by `rule\0target`. */
  readonly targets = new Map<string, Counters>();

  /** @param clientCapacity clients each rule's ledger keeps (`[server] clients`) */
  constructor(public clientCapacity = 10_000) {}

  /** Changes what each rule's ledger keeps; forgets the clients of rules not in `keep`. */
  applyClients(capacity: number, keep: ReadonlySet<string>): void {
    this.clientCapacity = capacity;
    for (const [rule, counters] of this.rules) {
      if (capacity === 0) counters.clients = null;
      else if (!keep.has(rule) || counters.clients === null) {
        counters.clients = new ClientLedger(capacity);
      } else counters.clients.resize(capacity);
    }
  }

  /** The counters of `rule`'s sessions on `target`. Created on first use. */
  ofTarget(rule: string, target: string): Counters {
    return this.#get(this.targets, `${rule}\u0000${target}`, null);
  }

  /** The counters of `rule`, with its client ledger. Created on first use. */
  ofRule(rule: string): Counters {
    return this.#get(this.rules, rule, this.clientCapacity);
  }

  /**
   * Every counter set an event on `listener` under `rule` adds to: the
   * listener's, the (rule, listener) pair's and the rule's. Created on first use.
   */
  of(rule: string | null, listener: string): Counters[] {
    const pairKey = `${rule ?? ""}\u0000${listener}`;
    let pair = this.pairs.get(pairKey);
    if (!pair) this.pairs.set(pairKey, pair = { rule, listener, counters: emptyCounters() });
    const result = [this.#get(this.listeners, listener, null), pair.counters];
    if (rule !== null) result.push(this.#get(this.rules, rule, this.clientCapacity));
    return result;
  }

  #get(map: Map<string, Counters>, key: string, clientCapacity: number | null): Counters {
    let counters = map.get(key);
    if (!counters) map.set(key, counters = emptyCounters(clientCapacity));
    return counters;
  }

  /** Totals over every listener (each session counts on exactly one listener). */
  totals(): Counters {
    const sum = emptyCounters();
    for (const c of this.listeners.values()) {
      if (c.firstSession !== null && c.firstSession < (sum.firstSession ?? Infinity)) {
        sum.firstSession = c.firstSession;
        sum.firstClient = c.firstClient;
      }
      if (c.lastSession !== null && c.lastSession >= (sum.lastSession ?? -Infinity)) {
        sum.lastSession = c.lastSession;
        sum.lastClient = c.lastClient;
      }
      sum.active += c.active;
      sum.total += c.total;
      sum.errors += c.errors;
      sum.bytesUp += c.bytesUp;
      sum.bytesDown += c.bytesDown;
      for (const [reason, n] of Object.entries(c.blocked)) {
        sum.blocked[reason as BlockReason] = (sum.blocked[reason as BlockReason] ?? 0) + n;
      }
      for (const [reason, n] of Object.entries(c.dropped)) {
        sum.dropped[reason as DropReason] = (sum.dropped[reason as DropReason] ?? 0) + n;
      }
    }
    return sum;
  }
}

/** Adds a session start to counters (the client ledger is the tracker's). */
export function countStart(counters: Counters[], client: string, now: number): void {
  for (const c of counters) {
    c.active++;
    c.total++;
    // A worker's session may be reported after a later one of another isolate.
    if (c.firstSession === null || now < c.firstSession) {
      c.firstSession = now;
      c.firstClient = client;
    }
    if (c.lastSession === null || now >= c.lastSession) {
      c.lastSession = now;
      c.lastClient = client;
    }
  }
}

/** Adds a refusal of `client` to counters. */
export function countBlock(counters: Counters[], reason: BlockReason, client: string): void {
  for (const c of counters) {
    c.blocked[reason] = (c.blocked[reason] ?? 0) + 1;
    c.lastBlocked = client;
  }
}

/** Adds relayed bytes to counters. */
export function countBytes(
  counters: Counters[],
  up: number,
  down: number,
): void {
  for (const c of counters) {
    c.bytesUp += up;
    c.bytesDown += down;
  }
}

/** The sum of a by-cause record (`blocked`, `dropped`). */
export function total(byCause: Partial<Record<string, number>>): number {
  return Object.values(byCause).reduce((sum: number, n) => sum + (n ?? 0), 0);
}

/** Adds a dropped datagram to counters. */
export function countDrop(counters: Counters[], reason: DropReason): void {
  for (const c of counters) c.dropped[reason] = (c.dropped[reason] ?? 0) + 1;
}
