/**
 * `portbounce status`: ask a running instance's status endpoint for its
 * counters and print them as a table, or as JSON.
 *
 * @module
 */
import { ago } from "../status/page.ts";
import type { StatusReport } from "../status/report.ts";
import { total } from "../status/stats.ts";
import { parseCommandArgs, UsageError } from "./args.ts";
import { renderTable } from "./check.ts";
import { ExitCode } from "../server/exit_codes.ts";

/** Help for `portbounce status`. */
export const STATUS_HELP = `Usage: portbounce status [--url URL] [--json]

Asks a running portbounce for its counters, through the status endpoint that
[server] status = "ADDR:PORT" turns on.

Options:
      --url URL   the endpoint (default http://127.0.0.1:9180)
      --json      print /status.json as it is
  -h, --help      this help

Exit codes: 0 answered, 1 no answer.`;

/** Renders the report as text. */
export function renderStatusText(report: StatusReport): string {
  const now = Date.parse(report.now);
  const rules = renderTable(
    [
      "RULE",
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
  return `portbounce ${report.version}, ${report.source}, up ${report.uptime_s}s, ${report.totals.active} live sessions\n\n${rules}\n\n${listeners}`;
}

/** Runs `portbounce status ARGS`; resolves to the exit code. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("status", args, {
    url: { type: "string", default: "http://127.0.0.1:9180" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(STATUS_HELP);
    return ExitCode.ok;
  }
  let url: URL;
  try {
    url = new URL("/status.json", values.url);
  } catch {
    throw new UsageError(
      `status: --url must be a URL such as http://127.0.0.1:9180, got "${values.url}"`,
    );
  }
  let report: StatusReport;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    report = await response.json();
  } catch (error) {
    console.error(`portbounce status: no answer from ${url}: ${(error as Error).message}`);
    return ExitCode.runtime;
  }
  console.log(values.json ? JSON.stringify(report, null, 2) : renderStatusText(report));
  return ExitCode.ok;
}
