/**
 * The status report: per rule and per listener, what `/status.json`, the
 * status page, `/metrics` and `portbounce status` show, and the live
 * sessions (`/sessions.json`, `portbounce sessions`). Built from the counters,
 * the rules in force and the session list; pure.
 *
 * @module
 */
import type { ListenEndpoint } from "../config/endpoint.ts";
import { type Rule, targetsText } from "../config/types.ts";
import type { BlockReason, DropReason } from "../relay/session.ts";
import type { Counters, Stats } from "./stats.ts";
import type { Bucket } from "./history.ts";

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

/** One live session, as listed. */
export interface SessionView {
  readonly rule: string;
  readonly protocol: "tcp" | "udp";
  readonly client: string;
  readonly listen: string;
  readonly target: string;
  /** The bouncer's own `ip:port` toward the target (null while connecting). */
  readonly local: string | null;
  readonly started: string;
  readonly age_s: number;
  readonly idle_s: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
  /** `active`, or `draining` (its rule or listener was removed by a reload). */
  readonly state: "active" | "draining";
  /** Seconds until a draining session is closed; null without a deadline. */
  readonly drain_left_s: number | null;
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
  /** The latest client: admitted, or for block rules refused. */
  readonly last_client: string | null;
}

/** One target of a rule: its health and this rule's sessions on it. */
export interface TargetReport {
  readonly target: string;
  readonly up: boolean;
  /** When it last went up or down. */
  readonly since: string;
  readonly failures: number;
  readonly last_error: string | null;
  /** Whether active health checks run for it. */
  readonly checked: boolean;
  readonly active: number;
  readonly total: number;
  readonly errors: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
}

/** Health of a target, as the engine knows it. */
export interface TargetHealthInput {
  readonly up: boolean;
  readonly since: number;
  readonly failures: number;
  readonly lastError: string | null;
  readonly checked: boolean;
}

/** One rule in the report. */
export interface RuleReport extends CountersReport {
  readonly name: string;
  /** Position in the rule file; null for a removed rule whose sessions still drain. */
  readonly index: number | null;
  readonly action: "pass" | "block";
  readonly protocols: readonly string[];
  /** Listen addresses with numeric ports (`203.0.113.10:80`). */
  readonly listen: readonly string[];
  readonly target: string | null;
  /** `in force`, or `removed` (no longer in the rule file, or ended: its sessions drain). */
  readonly state: "in force" | "removed";
  /** When the rule ends (`until`, ISO), or null. */
  readonly expires: string | null;
  /** Live sessions that moved nothing for 10 seconds or more (quiet UDP flows among them). */
  readonly idle: number;
  /** Its targets (several with `bounce_to` a list), in order. */
  readonly targets: readonly TargetReport[];
  /** Per-minute history, oldest first (see `history` in the input). */
  readonly history: readonly Bucket[];
  /**
   * Seconds without a new session after which the rule counts as gone quiet:
   * its `alarm_quiet`, or {@linkcode DEFAULT_QUIET_AFTER_S}.
   */
  readonly quiet_after_s: number;
  /** Distinct client addresses that started sessions in the last 1, 15 and 60 minutes. */
  readonly clients_1m: number;
  readonly clients_15m: number;
  readonly clients_60m: number;
}

/** One listener in the report. */
export interface ListenerReport extends CountersReport, ListenerState {}

/** Log lines that could not be written. */
export interface LogHealthReport {
  readonly lines_failed: number;
  readonly lines_dropped: number;
  readonly last_error: string | null;
}

/** The large-buffer memory budget. */
export interface BuffersReport {
  readonly budget_bytes: number;
  readonly in_use_bytes: number;
  readonly refused: number;
}

/** Alarms in force and raised lately. */
export interface AlarmsReport {
  readonly active: readonly { readonly rule: string; readonly kind: string }[];
  readonly recent: readonly {
    readonly kind: string;
    readonly rule: string;
    readonly at: string;
    readonly detail: string;
  }[];
  /** Alarms raised so far, by rule and kind. */
  readonly counts: readonly {
    readonly rule: string;
    readonly kind: string;
    readonly count: number;
  }[];
}

/** The last reload of the rule file (SIGHUP) and what came of it. */
export interface ReloadReport {
  readonly at: string;
  /**
   * `applied`; `partly applied` (some listener could not be bound: the rest is in
   * force); `refused` (the file had problems: the running rules are unchanged).
   */
  readonly result: "applied" | "partly applied" | "refused";
  /** The reload line when applied; what was wrong otherwise. */
  readonly summary: string;
  readonly problems: readonly string[];
}

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
  readonly log: LogHealthReport;
  readonly buffers: BuffersReport;
  readonly alarms: AlarmsReport;
  /** Minutes of history each rule carries here. */
  readonly history_minutes: number;
  /** The last reload since start, or null. */
  readonly last_reload: ReloadReport | null;
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
  readonly sessions: readonly SessionView[];
  readonly log: LogHealthReport;
  readonly buffers: BuffersReport;
  /** Each target's health, by `host:port`. */
  readonly targets: ReadonlyMap<string, TargetHealthInput>;
  /** Each listener's targets of each rule, to list them (`host:port`, in order). */
  readonly ruleTargets: ReadonlyMap<string, readonly string[]>;
  /** The last `minutes` of history of a rule (`rule:NAME`) or listener (`listener:KEY`). */
  readonly history: (key: string, minutes: number) => Bucket[];
  /** Minutes of history to put in the report. */
  readonly historyMinutes: number;
  readonly alarms: AlarmsReport;
  readonly lastReload: ReloadReport | null;
}

/** A session counts as idle after this long without traffic. */
export const IDLE_AFTER_S = 10;

/** A rule without `alarm_quiet` counts as gone quiet after this long without a new session. */
export const DEFAULT_QUIET_AFTER_S = 300;

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function countersReport(c: Counters | undefined, lastClient = c?.lastClient): CountersReport {
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
    last_client: lastClient ?? null,
  };
}

/** A listen address as the report shows it: the host as written, the ports as numbers. */
export function listenText(endpoint: ListenEndpoint): string {
  const { first, last } = endpoint.ports;
  const host = endpoint.host.kind === "any"
    ? "*"
    : endpoint.host.kind === "name"
    ? endpoint.host.name
    : endpoint.host.family === 6
    ? `[${endpoint.host.address}]`
    : endpoint.host.address;
  return `${host}:${first === last ? first : `${first}-${last}`}`;
}

/** Builds the report. */
export function buildStatusReport(input: StatusInput): StatusReport {
  const { stats, now } = input;
  const idleByRule = new Map<string, number>();
  for (const session of input.sessions) {
    if (session.idle_s >= IDLE_AFTER_S) {
      idleByRule.set(session.rule, (idleByRule.get(session.rule) ?? 0) + 1);
    }
  }
  const inForce = new Set(input.rules.map((rule) => rule.name));
  const removed = [
    ...new Set(input.sessions.filter((s) => !inForce.has(s.rule)).map((s) => s.rule)),
  ];
  const targetRows = (rule: string): TargetReport[] =>
    (input.ruleTargets.get(rule) ?? []).map((target) => {
      const health = input.targets.get(target);
      const c = stats.targets.get(`${rule}\u0000${target}`);
      return {
        target,
        up: health?.up ?? true,
        since: new Date(health?.since ?? input.startedAt).toISOString(),
        failures: health?.failures ?? 0,
        last_error: health?.lastError ?? null,
        checked: health?.checked ?? false,
        active: c?.active ?? 0,
        total: c?.total ?? 0,
        errors: c?.errors ?? 0,
        bytes_up: c?.bytesUp ?? 0,
        bytes_down: c?.bytesDown ?? 0,
      };
    });
  const ruleRow = (
    name: string,
    counters: Counters | undefined,
    shape: Pick<
      RuleReport,
      | "index"
      | "action"
      | "protocols"
      | "listen"
      | "target"
      | "state"
      | "quiet_after_s"
      | "expires"
    >,
  ): RuleReport => {
    const recent = counters?.clients;
    return {
      name,
      ...shape,
      targets: targetRows(name),
      history: input.historyMinutes > 0 ? input.history(`rule:${name}`, input.historyMinutes) : [],
      ...countersReport(
        counters,
        shape.action === "block" ? counters?.lastBlocked : counters?.lastClient,
      ),
      idle: idleByRule.get(name) ?? 0,
      clients_1m: recent?.countWithin(60_000, now) ?? 0,
      clients_15m: recent?.countWithin(15 * 60_000, now) ?? 0,
      clients_60m: recent?.countWithin(60 * 60_000, now) ?? 0,
    };
  };
  return {
    version: input.version,
    source: input.source,
    started: new Date(input.startedAt).toISOString(),
    now: new Date(now).toISOString(),
    uptime_s: Math.round((now - input.startedAt) / 1000),
    totals: countersReport(stats.totals()),
    rules: [
      ...input.rules.map((rule) =>
        ruleRow(rule.name, stats.rules.get(rule.name), {
          index: rule.index,
          action: rule.action,
          protocols: rule.protocols,
          listen: rule.listen.map(listenText),
          target: rule.action === "pass" ? targetsText(rule) : null,
          state: "in force",
          expires: rule.until === null ? null : new Date(rule.until).toISOString(),
          quiet_after_s: rule.alarmQuietMs === null
            ? DEFAULT_QUIET_AFTER_S
            : Math.round(rule.alarmQuietMs / 1000),
        })
      ),
      ...removed.map((name) => {
        const sessions = input.sessions.filter((s) => s.rule === name);
        return ruleRow(name, stats.rules.get(name), {
          index: null,
          action: "pass",
          protocols: [...new Set(sessions.map((s) => s.protocol))],
          listen: [...new Set(sessions.map((s) => s.listen))],
          target: sessions[0].target,
          state: "removed",
          expires: null,
          quiet_after_s: DEFAULT_QUIET_AFTER_S,
        });
      }),
    ],
    listeners: input.listeners.map((listener) => ({
      ...listener,
      ...countersReport(stats.listeners.get(listener.key)),
    })),
    log: input.log,
    buffers: input.buffers,
    alarms: input.alarms,
    history_minutes: input.historyMinutes,
    last_reload: input.lastReload,
  };
}
