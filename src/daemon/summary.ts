/**
 * Counters and sessions as log lines: the exit summary and the SIGUSR2 dump
 * (Barefoot prints every session with its age, idle time and bytes on a
 * signal; so does this).
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { countOf } from "../config/describe.ts";
import { formatDuration } from "../config/duration.ts";
import type { InForce } from "../status/metrics.ts";
import type { SessionView } from "../status/report.ts";
import { emptyCounters, type Stats, total } from "../status/stats.ts";
import type { Engine } from "../server/engine.ts";

/** The totals, as numbers (fields of the JSON log) and as words. */
export function totals(stats: Stats): {
  readonly text: string;
  readonly fields: {
    sessions: number;
    bytes_up: number;
    bytes_down: number;
    errors: number;
    blocked: number;
  };
} {
  const t = stats.totals();
  const fields = {
    sessions: t.total,
    bytes_up: t.bytesUp,
    bytes_down: t.bytesDown,
    errors: t.errors,
    blocked: total(t.blocked),
  };
  return {
    text: `${
      countOf(fields.sessions, "session")
    }, ${fields.bytes_up} bytes up, ${fields.bytes_down} bytes down, ${
      countOf(fields.errors, "error")
    }, ${fields.blocked} blocked`,
    fields,
  };
}

/** The names of the rules and the keys of the listeners an engine runs now. */
export function inForce(engine: Engine): InForce {
  return {
    rules: new Set(engine.rules.map((rule) => rule.name)),
    listeners: new Set(engine.listenerPlans().map((plan) => plan.key)),
  };
}

/**
 * Writes the totals, one line per rule and per listener in force (and per
 * removed one that still has live sessions), and one per live session.
 */
export function logStatus(
  log: Logger,
  stats: Stats,
  sessions: readonly SessionView[],
  current: InForce,
): void {
  const memory = Deno.memoryUsage();
  const { text, fields } = totals(stats);
  log.info(
    "status: {summary}, {active} active; memory: rss {rss} KiB, heap {heap} KiB, external {external} KiB",
    {
      summary: text,
      ...fields,
      active: stats.totals().active,
      rss: Math.round(memory.rss / 1024),
      heap: Math.round(memory.heapUsed / 1024),
      external: Math.round(memory.external / 1024),
    },
  );
  for (
    const [kind, map, names] of [
      ["rule", stats.rules, current.rules],
      ["listener", stats.listeners, current.listeners],
    ] as const
  ) {
    // Every one in force, in order, with zeros where nothing happened yet; then removed ones still live.
    const shown = [
      ...[...names].map((name) => [name, map.get(name) ?? emptyCounters()] as const),
      ...[...map].filter(([name, c]) => !names.has(name) && c.active > 0),
    ];
    for (const [name, c] of shown) {
      const blocked = Object.entries(c.blocked).map(([why, n]) => `${why}=${n}`).join(" ") || "0";
      const dropped = Object.entries(c.dropped).map(([why, n]) => `${why}=${n}`).join(" ") || "0";
      log.info(
        "status {kind} {name}: active={active} total={total} up={up} down={down} errors={errors} blocked: {blocked} dropped: {dropped} last client {lastClient}",
        {
          kind,
          name,
          active: c.active,
          total: c.total,
          up: c.bytesUp,
          down: c.bytesDown,
          errors: c.errors,
          blocked,
          dropped,
          lastClient: c.lastClient ?? "none",
        },
      );
    }
  }
  for (const s of sessions) {
    log.info(
      "status session {rule} {protocol} {client} -> {listen} -> {target} via {local}: age {age}, idle {idle}, up {bytes_up}, down {bytes_down}, {state}",
      {
        ...s,
        local: s.local ?? "(connecting)",
        age: formatDuration(s.age_s * 1000),
        idle: formatDuration(s.idle_s * 1000),
        state: s.state === "draining" && s.drain_left_s !== null
          ? `draining, ${formatDuration(s.drain_left_s * 1000)} left`
          : s.state,
      },
    );
  }
}
