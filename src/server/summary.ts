/**
 * Counters as log lines: the exit summary and the SIGUSR2 status dump.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { type Stats, total } from "../status/stats.ts";

/** `12 sessions, 3400 bytes up, 9100 bytes down, 0 errors, 2 blocked`. */
export function summaryLine(stats: Stats): string {
  const t = stats.totals();
  return `${t.total} sessions, ${t.bytesUp} bytes up, ${t.bytesDown} bytes down, ${t.errors} errors, ${
    total(t.blocked)
  } blocked`;
}

/** Writes one line per rule and per listener with its counters. */
export function logStatus(log: Logger, stats: Stats): void {
  const memory = Deno.memoryUsage();
  log.info(
    "status: {summary}, {active} active; memory: rss {rss} KiB, heap {heap} KiB, external {external} KiB",
    {
      summary: summaryLine(stats),
      active: stats.totals().active,
      rss: Math.round(memory.rss / 1024),
      heap: Math.round(memory.heapUsed / 1024),
      external: Math.round(memory.external / 1024),
    },
  );
  for (
    const [kind, map] of [["rule", stats.rules], [
      "listener",
      stats.listeners,
    ]] as const
  ) {
    for (const [name, c] of map) {
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
}
