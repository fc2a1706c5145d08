/**
 * `portbounce status`: ask a running instance's status endpoint for its
 * counters and print them as a table, or as JSON.
 *
 * @module
 */
import { countOf } from "../config/describe.ts";
import { ago } from "../status/page.ts";
import { unicodeSparkline } from "../status/sparkline.ts";
import type { StatusReport } from "../status/report.ts";
import { total } from "../status/stats.ts";
import { parseCommandArgs } from "./args.ts";
import { ENDPOINT_OPTIONS, endpointUrl, fetchJson } from "./endpoint_client.ts";
import { renderTable } from "./check.ts";
import { ExitCode } from "../server/exit_codes.ts";

/** Help for `portbounce status`. */
export const STATUS_HELP = `Usage: portbounce status [--url URL | -c FILE] [--json]

Asks a running portbounce for its counters, through the status endpoint that
[server] status = "ADDR:PORT" turns on.

Options:
      --url URL      the endpoint, e.g. 127.0.0.1:9180 (default http://127.0.0.1:9180)
  -c, --config FILE  ask the endpoint FILE's [server] status names
      --json         print /status.json as it is
  -h, --help         this help

Exit codes: 0 answered, 1 no answer.`;

/** Renders the report as text. */
export function renderStatusText(report: StatusReport): string {
  const now = Date.parse(report.now);
  const rules = renderTable(
    [
      "RULE",
      "LAST HOUR",
      "ACTION",
      "ACTIVE",
      "SESSIONS",
      "CLIENTS 1m/15m/60m",
      "LAST SESSION",
      "BLOCKED",
      "ERRORS",
      "UP/DOWN",
    ],
    report.rules.map((r) => [
      r.name,
      unicodeSparkline(r.history.slice(-60).map((b) => b.sessions)).padEnd(60),
      r.action,
      String(r.active),
      String(r.total),
      `${r.clients_1m}/${r.clients_15m}/${r.clients_60m}`,
      ago(r.last_session, now),
      String(total(r.blocked)),
      String(r.errors),
      `${r.bytes_up}/${r.bytes_down}`,
    ]),
  );
  const listeners = renderTable(
    ["LISTENER", "SOCKET", "ACTIVE", "SESSIONS", "BLOCKED"],
    report.listeners.map((l) => [
      l.key,
      l.bound ?? `not bound: ${l.error}`,
      String(l.active),
      String(l.total),
      String(total(l.blocked)),
    ]),
  );
  const targets = report.rules.flatMap((r) => r.targets.map((t) => [r.name, t] as const));
  const targetTable = targets.length > report.rules.length ||
      targets.some(([, t]) => !t.up)
    ? "\n\n" + renderTable(
      ["RULE", "TARGET", "STATE", "ACTIVE", "SESSIONS", "ERRORS", "UP/DOWN"],
      targets.map(([rule, t]) => [
        rule,
        t.target,
        t.up ? "up" : `down (${t.last_error ?? "no answer"})`,
        String(t.active),
        String(t.total),
        String(t.errors),
        `${t.bytes_up}/${t.bytes_down}`,
      ]),
    )
    : "";
  return `portbounce ${report.version}, ${report.source}, up ${report.uptime_s}s, ${
    countOf(report.totals.active, "live session")
  }\n\n${rules}${targetTable}\n\n${listeners}`;
}

/** Runs `portbounce status ARGS`; resolves to the exit code. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("status", args, ENDPOINT_OPTIONS);
  if (values.help) {
    console.log(STATUS_HELP);
    return ExitCode.ok;
  }
  const report = await fetchJson<StatusReport>(await endpointUrl("status", values), "/status.json");
  if ("error" in report) {
    console.error(`portbounce status: ${report.error}`);
    return ExitCode.runtime;
  }
  console.log(values.json ? JSON.stringify(report, null, 2) : renderStatusText(report));
  return ExitCode.ok;
}
