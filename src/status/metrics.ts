/**
 * `/metrics`: the counters in the Prometheus text exposition format (0.0.4),
 * labelled by rule, protocol and listen address. Pure.
 *
 * @module
 */
import type { StatusReport } from "./report.ts";
import type { Counters, Stats } from "./stats.ts";

type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length > 0 ? `{${parts.join(",")}}` : "";
}

/** Splits a listener key (`tcp 127.0.0.1:80`) into labels. */
function listenerLabels(key: string): Labels {
  const space = key.indexOf(" ");
  return { protocol: key.slice(0, space), listen: key.slice(space + 1) };
}

class Exposition {
  readonly #families = new Map<string, { help: string; type: string; samples: string[] }>();

  add(name: string, type: "counter" | "gauge", help: string, labels: Labels, value: number): void {
    let family = this.#families.get(name);
    if (!family) this.#families.set(name, family = { help, type, samples: [] });
    family.samples.push(`${name}${labelText(labels)} ${value}`);
  }

  toString(): string {
    return [...this.#families].map(([name, { help, type, samples }]) =>
      [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples].join("\n")
    ).join("\n") + "\n";
  }
}

/** The rules and listeners in force: counters of others are shown only while they have live sessions. */
export interface InForce {
  readonly rules: ReadonlySet<string>;
  readonly listeners: ReadonlySet<string>;
}

/** How the client ledger is kept: names looked up, state file writes. */
export interface KeepingCounts {
  readonly nameLookups: number;
  readonly nameFailures: number;
  /** Failed writes of the state file; null without one. */
  readonly stateWriteFailures: number | null;
}

/** Renders every counter as Prometheus text. */
export function renderMetrics(
  report: StatusReport,
  stats: Stats,
  startedAt: number,
  inForce: InForce,
  keeping: KeepingCounts = { nameLookups: 0, nameFailures: 0, stateWriteFailures: null },
): string {
  const out = new Exposition();
  out.add(
    "portbounce_start_time_seconds",
    "gauge",
    "When this portbounce started (Unix time).",
    {},
    startedAt / 1000,
  );
  // As Prometheus reports its own: the rules loaded at start count as the first success.
  const reload = report.last_reload;
  out.add(
    "portbounce_last_reload_success",
    "gauge",
    "1 if the last reload of the rule file (or the start) applied it whole, 0 if it was refused or a listener could not be bound.",
    {},
    reload === null || reload.result === "applied" ? 1 : 0,
  );
  out.add(
    "portbounce_last_reload_timestamp_seconds",
    "gauge",
    "When the rule file was last reloaded, or portbounce started (Unix time).",
    {},
    (reload === null ? startedAt : Date.parse(reload.at)) / 1000,
  );
  for (const listener of report.listeners) {
    out.add(
      "portbounce_listener_up",
      "gauge",
      "1 if the listener is bound, 0 if binding it failed.",
      listenerLabels(listener.key),
      listener.bound ? 1 : 0,
    );
  }
  for (const { rule, listener, counters } of stats.pairs.values()) {
    // A rule or listener a reload removed leaves once its last session has ended.
    const current = (rule === null || inForce.rules.has(rule)) && inForce.listeners.has(listener);
    if (!current && counters.active === 0) continue;
    const labels = { rule: rule ?? "", ...listenerLabels(listener) };
    addCounters(out, labels, counters);
  }
  for (const rule of report.rules) {
    for (
      const [window, value] of [["1m", rule.clients_1m], ["15m", rule.clients_15m], [
        "60m",
        rule.clients_60m,
      ]] as const
    ) {
      out.add(
        "portbounce_rule_clients",
        "gauge",
        "Distinct client addresses seen within the window (sessions, or refusals by the rule).",
        { rule: rule.name, window },
        value,
      );
    }
  }
  for (const rule of report.rules) {
    const ledger = stats.rules.get(rule.name)?.clients;
    out.add(
      "portbounce_rule_ledger_clients",
      "gauge",
      "Client addresses the rule's ledger holds ([server] clients at most, and those in session).",
      { rule: rule.name },
      ledger?.size ?? 0,
    );
    out.add(
      "portbounce_rule_ledger_evicted_total",
      "counter",
      "Clients the rule's ledger forgot to stay within [server] clients (the least recently seen).",
      { rule: rule.name },
      ledger?.evicted ?? 0,
    );
  }
  for (
    const [result, count] of [
      ["ok", keeping.nameLookups - keeping.nameFailures],
      ["failed", keeping.nameFailures],
    ] as const
  ) {
    out.add(
      "portbounce_client_name_lookups_total",
      "counter",
      "Reverse-DNS lookups of client names ([server] client_names), and those that failed.",
      { result },
      count,
    );
  }
  if (keeping.stateWriteFailures !== null) {
    out.add(
      "portbounce_state_write_failures_total",
      "counter",
      "Writes of the state file ([server] state) that failed; relaying goes on regardless.",
      {},
      keeping.stateWriteFailures,
    );
  }
  for (const rule of report.rules) {
    for (const t of rule.targets) {
      const labels = { rule: rule.name, target: t.target };
      out.add(
        "portbounce_target_up",
        "gauge",
        "1 if the target takes sessions, 0 if it is down.",
        labels,
        t.up ? 1 : 0,
      );
      out.add(
        "portbounce_target_sessions_active",
        "gauge",
        "Live sessions of the rule on the target.",
        labels,
        t.active,
      );
      out.add(
        "portbounce_target_sessions_total",
        "counter",
        "Sessions of the rule that reached the target.",
        labels,
        t.total,
      );
      out.add(
        "portbounce_target_errors_total",
        "counter",
        "Failed connects and I/O errors on the target.",
        labels,
        t.errors,
      );
      out.add(
        "portbounce_target_bytes_total",
        "counter",
        "Bytes relayed with the target, by direction.",
        { ...labels, direction: "up" },
        t.bytes_up,
      );
      out.add(
        "portbounce_target_bytes_total",
        "counter",
        "",
        { ...labels, direction: "down" },
        t.bytes_down,
      );
    }
  }
  for (const { rule, kind, count } of report.alarms.counts) {
    out.add("portbounce_alarms_total", "counter", "Alarms raised, by rule and kind.", {
      rule,
      alarm: kind,
    }, count);
  }
  for (const rule of report.rules) {
    for (const kind of ["quiet", "errors"]) {
      const active = report.alarms.active.some((a) => a.rule === rule.name && a.kind === kind);
      out.add("portbounce_alarm_active", "gauge", "1 while the alarm is raised.", {
        rule: rule.name,
        alarm: kind,
      }, active ? 1 : 0);
    }
  }
  out.add(
    "portbounce_log_lines_lost_total",
    "counter",
    "Log lines not written: write failed (a vanished reader, a full disk) or the output could not keep up.",
    { cause: "write-failed" },
    report.log.lines_failed,
  );
  out.add(
    "portbounce_log_lines_lost_total",
    "counter",
    "",
    { cause: "queue-full" },
    report.log.lines_dropped,
  );
  out.add(
    "portbounce_buffer_memory_bytes",
    "gauge",
    "Large relay buffers: lent out now, and the budget ([server] buffer_memory).",
    { state: "in_use" },
    report.buffers.in_use_bytes,
  );
  out.add(
    "portbounce_buffer_memory_bytes",
    "gauge",
    "",
    { state: "budget" },
    report.buffers.budget_bytes,
  );
  out.add(
    "portbounce_buffer_refused_total",
    "counter",
    "Times a large buffer was wanted and the budget was spent.",
    {},
    report.buffers.refused,
  );
  return out.toString();
}

function addCounters(out: Exposition, labels: Labels, c: Counters): void {
  out.add("portbounce_sessions_active", "gauge", "Live sessions.", labels, c.active);
  out.add("portbounce_sessions_total", "counter", "Sessions started.", labels, c.total);
  out.add("portbounce_errors_total", "counter", "Connect and I/O errors.", labels, c.errors);
  out.add(
    "portbounce_bytes_total",
    "counter",
    "Bytes relayed, by direction (up: client to target).",
    {
      ...labels,
      direction: "up",
    },
    c.bytesUp,
  );
  out.add("portbounce_bytes_total", "counter", "", { ...labels, direction: "down" }, c.bytesDown);
  for (const [reason, n] of Object.entries(c.blocked)) {
    out.add("portbounce_blocked_total", "counter", "Sessions refused, by reason.", {
      ...labels,
      reason,
    }, n);
  }
  for (const [reason, n] of Object.entries(c.dropped)) {
    out.add("portbounce_dropped_total", "counter", "UDP datagrams not relayed, by reason.", {
      ...labels,
      reason,
    }, n);
  }
  if (c.lastSession !== null) {
    out.add(
      "portbounce_last_session_timestamp_seconds",
      "gauge",
      "When the latest session started (Unix time).",
      labels,
      c.lastSession / 1000,
    );
  }
}
