/**
 * `portbounce status`: ask a running instance's status endpoint for its
 * counters and print them as a table, or as JSON.
 *
 * @module
 */
import { countOf } from "../config/describe.ts";
import { formatSize } from "../config/size.ts";
import { ago, span } from "../status/page.ts";
import { unicodeSparkline } from "../status/sparkline.ts";
import type { StatusReport } from "../status/report.ts";
import { total } from "../status/stats.ts";
import { parseCommandArgs } from "./args.ts";
import { ENDPOINT_OPTIONS, endpointUrl, fetchJson } from "./endpoint_client.ts";
import { renderTable } from "./check.ts";
import { ExitCode } from "../daemon/exit_codes.ts";

/** Help for `portbounce status`. */
export const STATUS_HELP = `Usage: portbounce status [--url URL | -c FILE] [--wide] [--json]

Asks a running portbounce for its counters, through the status endpoint that
[server] status = "ADDR:PORT" turns on.

Options:
      --url URL      the endpoint, e.g. 127.0.0.1:9180 (default http://127.0.0.1:9180)
  -c, --config FILE  ask the endpoint FILE's [server] status names
      --wide         every column, bytes exact and the last hour minute by minute
                     (the default fits 100 columns)
      --json         print /status.json as it is
  -h, --help         this help

Exit codes: 0 answered, 1 no answer.`;

/** The terminal width the default table keeps within. */
export const STATUS_COLUMNS = 100;
/** Longer rule names and errors are shortened to this in the default table. */
const MAX_CELL = 24;

function shorten(text: string, max = MAX_CELL): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join("")}…`;
}

/** Sums `values` in groups of `size` (the last hour in 5-minute steps). */
function grouped(values: readonly number[], size: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < values.length; i += size) {
    out.push(values.slice(i, i + size).reduce((a, b) => a + b, 0));
  }
  return out;
}

/**
 * A table of `columns` (header, cells per row) that leaves out `optional`
 * columns, last first, until it fits `width`.
 */
function fittedTable(
  columns: readonly { header: string; cells: readonly string[]; optional?: number }[],
  width: number,
): string {
  let shown = [...columns];
  const render = () =>
    renderTable(
      shown.map((c) => c.header),
      shown[0].cells.map((_, row) => shown.map((c) => c.cells[row])),
    );
  let text = render();
  const widest = (t: string) => t.split("\n").reduce((max, line) => Math.max(max, line.length), 0);
  const droppable = columns.filter((c) => c.optional !== undefined)
    .sort((a, b) => b.optional! - a.optional!);
  for (const column of droppable) {
    if (widest(text) <= width) break;
    shown = shown.filter((c) => c !== column);
    text = render();
  }
  return text;
}

function lastReloadLine(report: StatusReport, now: number): string {
  const reload = report.last_reload;
  if (reload === null) return "";
  const head = `last reload ${ago(reload.at, now)}: ${reload.result}`;
  if (reload.result === "refused") {
    return `\n${head}: ${reload.summary}; the rules before it are in force${
      reload.problems.map((p) => `\n  ${p}`).join("")
    }`;
  }
  return `\n${head}${reload.problems.map((p) => `\n  ${p}`).join("")}`;
}

/**
 * Renders the report as text: by default within {@linkcode STATUS_COLUMNS}
 * columns (bytes in units, the last hour in 5-minute steps, long names
 * shortened, less needed columns left out if still too wide); `wide`: all.
 */
export function renderStatusText(report: StatusReport, wide = false): string {
  const now = Date.parse(report.now);
  const cell = wide ? (text: string) => text : (text: string) => shorten(text);
  const bytes = (up: number, down: number) =>
    wide ? `${up}/${down}` : `${formatSize(up)}/${formatSize(down)}`;
  const lastHour = (r: StatusReport["rules"][number]) => {
    if (r.action === "block") return "(block rule)";
    const minutes = r.history.slice(-60).map((b) => b.sessions);
    return wide ? unicodeSparkline(minutes).padEnd(60) : unicodeSparkline(grouped(minutes, 5));
  };
  const rules = report.rules;
  const ruleColumns = [
    { header: "RULE", cells: rules.map((r) => cell(r.name)) },
    { header: "LAST HOUR", cells: rules.map(lastHour), optional: 3 },
    ...(wide
      ? [
        { header: "ACTION", cells: rules.map((r) => r.action) },
        { header: "ACTIVE", cells: rules.map((r) => String(r.active)) },
        { header: "SESSIONS", cells: rules.map((r) => String(r.total)) },
      ]
      : [{ header: "ACTIVE/ALL", cells: rules.map((r) => `${r.active}/${r.total}`) }]),
    {
      header: wide ? "CLIENTS 1m/15m/60m" : "CLIENTS 1/15/60m",
      cells: rules.map((r) => `${r.clients_1m}/${r.clients_15m}/${r.clients_60m}`),
      optional: 1,
    },
    {
      header: wide ? "LAST SESSION" : "LAST",
      cells: rules.map((r) => ago(r.last_session, now)),
    },
    ...(wide ? [{ header: "LAST CLIENT", cells: rules.map((r) => r.last_client ?? "-") }] : []),
    { header: "BLOCKED", cells: rules.map((r) => String(total(r.blocked))), optional: 2 },
    { header: "ERRORS", cells: rules.map((r) => String(r.errors)) },
    { header: "UP/DOWN", cells: rules.map((r) => bytes(r.bytes_up, r.bytes_down)) },
  ];
  const width = wide ? Infinity : STATUS_COLUMNS;
  const listeners = report.listeners;
  const listenerTable = fittedTable([
    { header: "LISTENER", cells: listeners.map((l) => wide ? l.key : shorten(l.key, 40)) },
    {
      header: "SOCKET",
      cells: listeners.map((l) => {
        const socket = l.bound ?? `not bound: ${l.error}`;
        return wide ? socket : shorten(socket, 30);
      }),
    },
    { header: "ACTIVE", cells: listeners.map((l) => String(l.active)) },
    { header: "SESSIONS", cells: listeners.map((l) => String(l.total)) },
    { header: "BLOCKED", cells: listeners.map((l) => String(total(l.blocked))) },
  ], width);
  const targets = rules.flatMap((r) => r.targets.map((t) => [r.name, t] as const));
  const targetTable = targets.length > rules.length || targets.some(([, t]) => !t.up)
    ? "\n\n" + fittedTable([
      { header: "RULE", cells: targets.map(([rule]) => cell(rule)) },
      { header: "TARGET", cells: targets.map(([, t]) => wide ? t.target : shorten(t.target, 40)) },
      {
        header: "STATE",
        cells: targets.map(([, t]) => t.up ? "up" : cell(`down (${t.last_error ?? "no answer"})`)),
      },
      ...(wide
        ? [
          { header: "ACTIVE", cells: targets.map(([, t]) => String(t.active)) },
          { header: "SESSIONS", cells: targets.map(([, t]) => String(t.total)) },
        ]
        : [{ header: "ACTIVE/ALL", cells: targets.map(([, t]) => `${t.active}/${t.total}`) }]),
      { header: "ERRORS", cells: targets.map(([, t]) => String(t.errors)) },
      {
        header: "UP/DOWN",
        cells: targets.map(([, t]) => bytes(t.bytes_up, t.bytes_down)),
        optional: 1,
      },
    ], width)
    : "";
  return `portbounce ${report.version}, ${report.source}, up ${span(report.uptime_s * 1000)}, ${
    countOf(report.totals.active, "live session")
  }${lastReloadLine(report, now)}\n\n${
    fittedTable(ruleColumns, width)
  }${targetTable}\n\n${listenerTable}`;
}

/** Runs `portbounce status ARGS`; resolves to the exit code. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("status", args, {
    ...ENDPOINT_OPTIONS,
    wide: { type: "boolean" },
  });
  if (values.help) {
    console.log(STATUS_HELP);
    return ExitCode.ok;
  }
  const report = await fetchJson<StatusReport>(await endpointUrl("status", values), "/status.json");
  if ("error" in report) {
    console.error(`portbounce status: ${report.error}`);
    return ExitCode.runtime;
  }
  console.log(
    values.json ? JSON.stringify(report, null, 2) : renderStatusText(report, values.wide),
  );
  return ExitCode.ok;
}
