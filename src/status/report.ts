/**
 * The status report: per rule and per listener, what `/status.json`, the
 * status page, `/metrics` and `portbounce status` show. Built from the
 * counters and the rules in force; pure.
 *
 * @module
 */
import type { Rule } from "../config/types.ts";
import type { BlockReason, DropReason } from "../relay/session.ts";
import type { Counters, Stats } from "./stats.ts";

/** A listener as the status shows it: bound, or why not. */
export interface ListenerState {
  readonly key: string;
  readonly protocol: "tcp" | "udp";
  /** `ip:port` actually bound, or null when binding failed. */
  readonly bound: string | null;
  readonly error: string | null;
  /** Names of the rules deciding its clients, in order. */
  readonly rules: readonly string[];
}

/** Counters as they appear in the report. */
export interface CountersReport {
  readonly active: number;
  readonly total: number;
  readonly blocked: Partial<Record<BlockReason, number>>;
  readonly errors: number;
  readonly dropped: Partial<Record<DropReason, number>>;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly first_session: string | null;
  readonly last_session: string | null;
  readonly last_client: string | null;
}

/** One rule in the report. */
export interface RuleReport extends CountersReport {
  readonly name: string;
  readonly index: number;
  readonly action: "pass" | "block";
  readonly protocols: readonly string[];
  readonly listen: readonly string[];
  readonly target: string | null;
  /** Distinct client addresses that started sessions in the last 1, 15 and 60 minutes. */
  readonly clients_1m: number;
  readonly clients_15m: number;
  readonly clients_60m: number;
}

/** One listener in the report. */
export interface ListenerReport extends CountersReport, ListenerState {}

/** The whole report (`/status.json`). */
export interface StatusReport {
  readonly version: string;
  readonly source: string;
  readonly started: string;
  readonly now: string;
  readonly uptime_s: number;
  readonly totals: CountersReport;
  readonly rules: readonly RuleReport[];
  readonly listeners: readonly ListenerReport[];
}

/** What the report is built from. */
export interface StatusInput {
  readonly version: string;
  readonly source: string;
  readonly startedAt: number;
  readonly now: number;
  readonly rules: readonly Rule[];
  readonly listeners: readonly ListenerState[];
  readonly stats: Stats;
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function countersReport(c: Counters | undefined): CountersReport {
  return {
    active: c?.active ?? 0,
    total: c?.total ?? 0,
    blocked: { ...c?.blocked },
    errors: c?.errors ?? 0,
    dropped: { ...c?.dropped },
    bytes_up: c?.bytesUp ?? 0,
    bytes_down: c?.bytesDown ?? 0,
    first_session: iso(c?.firstSession ?? null),
    last_session: iso(c?.lastSession ?? null),
    last_client: c?.lastClient ?? null,
  };
}

/** Builds the report. */
export function buildStatusReport(input: StatusInput): StatusReport {
  const { stats, now } = input;
  return {
    version: input.version,
    source: input.source,
    started: new Date(input.startedAt).toISOString(),
    now: new Date(now).toISOString(),
    uptime_s: Math.round((now - input.startedAt) / 1000),
    totals: countersReport(stats.totals()),
    rules: input.rules.map((rule) => {
      const counters = stats.rules.get(rule.name);
      const recent = counters?.recentClients;
      return {
        name: rule.name,
        index: rule.index,
        action: rule.action,
        protocols: rule.protocols,
        listen: rule.listen.map((l) => l.text),
        target: rule.action === "pass" ? rule.bounceTo.text : null,
        ...countersReport(counters),
        clients_1m: recent?.countWithin(60_000, now) ?? 0,
        clients_15m: recent?.countWithin(15 * 60_000, now) ?? 0,
        clients_60m: recent?.countWithin(60 * 60_000, now) ?? 0,
      };
    }),
    listeners: input.listeners.map((listener) => ({
      ...listener,
      ...countersReport(stats.listeners.get(listener.key)),
    })),
  };
}
