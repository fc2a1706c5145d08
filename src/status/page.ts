/**
 * `/`: a small self-contained page (no external assets) that reloads itself
 * and shows, per rule, whether traffic is arriving and from how many clients:
 * what an operator watches while DNS moves over. Pure.
 *
 * @module
 */
import type { RuleReport, StatusReport } from "./report.ts";
import { total } from "./stats.ts";
import { countOf } from "../config/describe.ts";
import { formatSize } from "../config/size.ts";
import { svgChart, svgSparkline } from "./sparkline.ts";
import type { ClientRow, ClientsReport } from "./clients.ts";
import { formatDuration } from "../config/duration.ts";

const REFRESH_SECONDS = 5;

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** "12s", "3m", "2h", "4d": a duration in its largest whole unit. */
export function span(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

/** "12s ago", "3m ago", "never". */
export function ago(iso: string | null, now: number): string {
  return iso === null ? "never" : `${span(now - Date.parse(iso))} ago`;
}

/**
 * A rule's traffic: new sessions arriving, only older ones open, stopped, or
 * never came. Arriving means a new session within the rule's quiet window
 * (`alarm_quiet`, or 5 minutes), as its quiet alarm counts.
 */
export function ruleState(rule: RuleReport, now: number): "arriving" | "open" | "quiet" | "none" {
  if (
    rule.last_session !== null &&
    now - Date.parse(rule.last_session) < rule.quiet_after_s * 1000
  ) {
    return "arriving";
  }
  if (rule.active > 0) return "open";
  return rule.last_session === null ? "none" : "quiet";
}

const STATE_TEXT = {
  arriving: "traffic arriving",
  open: "sessions open, none new",
  quiet: "gone quiet",
  none: "no traffic yet",
};

/** A rule's targets, each with its health when there are several or one is down. */
function targetsCell(rule: RuleReport): string {
  if (rule.targets.length <= 1 && rule.targets.every((t) => t.up)) return escape(rule.target ?? "");
  return rule.targets.map((t) =>
    `<span class="target ${t.up ? "up" : "down"}">${escape(t.target)} ${
      t.up ? "up" : `down${t.last_error ? `: ${escape(t.last_error)}` : ""}`
    } (${t.active} live)</span>`
  ).join("<br>");
}

function historyText(minutes: number): string {
  return minutes % 60 === 0 ? `${minutes / 60}h` : `${minutes}m`;
}

function sparkline(rule: RuleReport): string {
  if (rule.action === "block" || rule.history.length === 0) return "";
  const values = rule.history.map((b) => b.sessions);
  const first = rule.first_session === null ? null : Date.parse(rule.first_session);
  const index = first === null
    ? null
    : rule.history.findIndex((b) => b.minute <= first && first < b.minute + 60_000);
  return svgSparkline(
    values,
    `${rule.name}: new sessions per minute`,
    index === null || index < 0 ? null : index,
    undefined,
    undefined,
    rule.history.at(-1)?.partial === true,
  );
}

/** The chart's window: what the page shows, and the choices it offers. */
export interface PageWindow {
  /** Minutes shown. */
  readonly minutes: number;
  /** The choice in force: `fitted` (since start), or `1h`, `6h`, `24h`. */
  readonly chosen: string;
  /** The choices this instance's history allows. */
  readonly choices: readonly string[];
  /** Minutes the fitted window (since start) spans. */
  readonly fitted: number;
}

const WINDOW_CHOICES: readonly [string, number][] = [["1h", 60], ["6h", 360], ["24h", 1440]];
/** The fitted window shows at least this much, so a fresh start draws a line, not a dot. */
const MIN_FITTED_MINUTES = 10;

/**
 * The window `/?window=CHOICE` asks for: `1h`, `6h`, `24h` (those within
 * `historyMinutes`), or by default (and for anything else) fitted to the
 * data: since start, at least 10 minutes, at most the history kept.
 */
export function chooseWindow(
  choice: string | null,
  uptimeMs: number,
  historyMinutes: number,
): PageWindow {
  const offered = WINDOW_CHOICES.filter(([, minutes]) => minutes <= historyMinutes);
  const choices = offered.map(([name]) => name);
  const asked = offered.find(([name]) => name === choice);
  const fitted = Math.min(
    historyMinutes,
    Math.max(MIN_FITTED_MINUTES, Math.ceil(uptimeMs / 60_000)),
  );
  if (asked) return { minutes: asked[1], chosen: asked[0], choices, fitted };
  return { minutes: fitted, chosen: "fitted", choices, fitted };
}

function windowLinks(window: PageWindow): string {
  const link = (choice: string, text: string) =>
    choice === window.chosen ? `<b>${text}</b>` : `<a href="/?window=${choice}">${text}</a>`;
  return `<p class="window">Window: ${
    [
      link("fitted", `since start (${historyText(window.fitted)})`),
      ...window.choices.map((c) => link(c, c)),
    ].join(" &middot; ")
  }</p>`;
}

function chart(report: StatusReport, window: PageWindow): string {
  const pass = report.rules.filter((r) => r.action === "pass" && r.history.length > 0);
  if (pass.length === 0) return "";
  return windowLinks(window) + svgChart(
    pass.map((r) => ({ name: r.name, values: r.history.map((b) => b.sessions) })),
    pass[0].history.map((b) => b.minute),
    undefined,
    undefined,
    pass[0].history.at(-1)?.partial === true,
  );
}

function lastReload(report: StatusReport, now: number): string {
  const reload = report.last_reload;
  if (reload === null) return "";
  const when = ago(reload.at, now);
  if (reload.result === "refused") {
    return `<p class="reload failed" id="reload">Last reload ${when} <b>refused</b>: ${
      escape(reload.summary)
    }; the rules before it are in force.${
      reload.problems.length > 0
        ? `<br>${reload.problems.slice(0, 5).map(escape).join("<br>")}${
          reload.problems.length > 5 ? `<br>... and ${reload.problems.length - 5} more` : ""
        }`
        : ""
    }</p>`;
  }
  return `<p class="reload ${
    reload.result === "applied" ? "" : "failed"
  }" id="reload">Last reload ${when}: ${reload.result}${
    reload.problems.length > 0 ? ` (${reload.problems.slice(0, 5).map(escape).join("; ")})` : ""
  }. <span class="detail">${escape(reload.summary)}</span></p>`;
}

/** What a newcomer needs first: which rules carry traffic, which went quiet and since when. */
function summary(report: StatusReport, now: number): string {
  const pass = report.rules.filter((r) => r.action === "pass" && r.state === "in force");
  const carrying = pass.filter((r) => ruleState(r, now) === "arriving");
  const quiet = pass.filter((r) => ruleState(r, now) === "quiet" || ruleState(r, now) === "open");
  const never = pass.filter((r) => ruleState(r, now) === "none");
  const names = (rules: RuleReport[], detail: (r: RuleReport) => string) =>
    rules.map((r) => `<b>${escape(r.name)}</b> (${detail(r)})`).join(", ");
  return `<div class="summary" id="summary">
<p>Carrying traffic: ${
    carrying.length === 0 ? "none" : names(
      carrying,
      (r) => `${countOf(r.clients_15m, "client")} in 15m, first ${ago(r.first_session, now)}`,
    )
  }</p>
<p>Gone quiet: ${
    quiet.length === 0 ? "none" : names(
      quiet,
      (r) =>
        `no new session for ${span(now - Date.parse(r.last_session!))}${
          r.active > 0 ? `, ${countOf(r.active, "session")} open` : ""
        }`,
    )
  }</p>
<p>No traffic yet: ${
    never.length === 0 ? "none" : never.map((r) => `<b>${escape(r.name)}</b>`).join(", ")
  }</p>
</div>`;
}

function alarmsList(report: StatusReport, now: number): string {
  if (report.alarms.recent.length === 0) return "";
  const items = [...report.alarms.recent].reverse().slice(0, 20).map((a) =>
    `<li class="${a.kind === "quiet" || a.kind === "errors" ? "warning" : "info"}">${
      ago(a.at, now)
    }: ${escape(a.kind)} &mdash; <b>${escape(a.rule)}</b>: ${escape(a.detail)}</li>`
  ).join("\n");
  return `<h2>Alarms</h2><ul class="alarms" id="alarms">\n${items}\n</ul>`;
}

/** `3 clients in the last 24h, last: printer-3.lab (198.51.100.7) 5m ago`, for a rule's row. */
function clientsSummary(
  clients: readonly ClientRow[],
  windowMs: number,
  now: number,
): string {
  if (clients.length === 0) return `no client in the last ${formatDuration(windowMs)}`;
  const last = clients[0];
  const who = last.name ? `${last.name} (${last.address})` : last.address;
  const when = last.active > 0 ? "in session now" : ago(last.last_seen, now);
  return `${countOf(clients.length, "client")} in the last ${
    formatDuration(windowMs)
  }, last: ${who} ${when}`;
}

/** Clients listed per rule on the page at most; `/clients.json` has them all. */
export const PAGE_CLIENTS = 50;

/** Per rule, who used it within the report's window, with the list behind a summary line. */
function clientsSection(clients: ClientsReport, windowMs: number, now: number): string {
  if (clients.ledger === "off") {
    return `<h2>Clients</h2><p id="clients">This instance keeps no clients ([server] clients = 0).</p>`;
  }
  const rules = clients.rules.map((rule) => {
    const rows = rule.clients.slice(0, PAGE_CLIENTS).map((c) =>
      `<tr><td>${escape(c.address)}</td><td>${escape(c.name ?? "")}</td><td>${
        escape(c.via)
      }</td><td>${ago(c.first_seen, now)}</td><td>${
        c.active > 0 ? "now" : ago(c.last_seen, now)
      }</td><td class="n">${c.sessions}${
        c.refused > 0 ? ` (${c.refused} refused)` : ""
      }</td><td class="n">${formatSize(c.bytes_up)} / ${formatSize(c.bytes_down)}</td></tr>`
    ).join("\n");
    const more = rule.clients.length > PAGE_CLIENTS
      ? `<p class="more">${rule.clients.length - PAGE_CLIENTS} more: <a href="/clients.json?rule=${
        encodeURIComponent(rule.name)
      }">/clients.json?rule=${escape(rule.name)}</a></p>`
      : "";
    const list = rows === ""
      ? ""
      : `<table class="clients"><thead><tr><th>client</th><th>name</th>` +
        `<th>via</th><th>first seen</th><th>last seen</th><th>sessions</th><th>bytes up / down</th>` +
        `</tr></thead><tbody>\n${rows}\n</tbody></table>${more}`;
    // A short list is shown at once; a long one behind its summary line.
    const open = rule.clients.length > 0 && rule.clients.length <= 5 ? " open" : "";
    return `<details data-rule="${escape(rule.name)}"${open}><summary><b>${
      escape(rule.name)
    }</b>: ${escape(clientsSummary(rule.clients, windowMs, now))}${
      rule.evicted > 0 ? ` (${rule.evicted} forgotten: [server] clients)` : ""
    }</summary>\n${list}</details>`;
  }).join("\n");
  return `<h2>Clients</h2><div class="wide" id="clients">\n${rules}\n</div>`;
}

/** Renders the page; `window` is the chart's (by default, the history the report carries). */
export function renderStatusPage(
  report: StatusReport,
  window: PageWindow = {
    minutes: report.history_minutes,
    chosen: "fitted",
    choices: [],
    fitted: report.history_minutes,
  },
  /** Each rule's clients of the last `clients.windowMs`, or null to leave the section out. */
  clients: { readonly report: ClientsReport; readonly windowMs: number } | null = null,
): string {
  const now = Date.parse(report.now);
  const ruleRows = report.rules.map((rule) => {
    const state = rule.state === "removed"
      ? "removed"
      : rule.action === "block"
      ? "block"
      : ruleState(rule, now);
    const stateText = state === "removed"
      ? "removed, draining"
      : state === "block"
      ? "block rule"
      : STATE_TEXT[state];
    return `<tr class="rule" data-rule="${escape(rule.name)}">
<td class="name">${escape(rule.name)}${
      rule.expires ? `<br><span class="client">until ${escape(rule.expires)}</span>` : ""
    }</td><td class="state ${state}">${stateText}</td>
<td class="spark">${sparkline(rule)}</td>
<td class="addr">${escape(rule.protocols.join("+"))} ${rule.listen.map(escape).join("<br>")}</td>
<td class="addr">${rule.target === null ? "&mdash;" : targetsCell(rule)}</td>
<td class="n">${rule.clients_1m} / ${rule.clients_15m} / ${rule.clients_60m}</td>
<td class="n">${rule.active}${rule.idle > 0 ? ` (${rule.idle} idle)` : ""} / ${rule.total}</td>
<td class="last">${ago(rule.last_session, now)}${
      rule.last_client ? `<br><span class="client">${escape(rule.last_client)}</span>` : ""
    }</td>
<td class="n">${total(rule.blocked)}</td><td class="n">${rule.errors}</td>
<td class="n">${formatSize(rule.bytes_up)} /<br>${formatSize(rule.bytes_down)}</td></tr>`;
  }).join("\n");
  const listenerRows = report.listeners.map((listener) =>
    `<tr class="listener"><td>${escape(listener.key)}</td><td class="state ${
      listener.bound ? "arriving" : "failed"
    }">${
      listener.bound
        ? `bound ${escape(listener.bound)}`
        : `not bound: ${escape(listener.error ?? "")}`
    }</td><td>${
      listener.rules.map(escape).join(", ")
    }</td><td class="n">${listener.active}</td><td class="n">${listener.total}</td><td class="n">${
      total(listener.blocked)
    }</td></tr>`
  ).join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="${REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>portbounce status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}p.meta{color:#666;margin:0 0 1em}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em;background:#fff}
th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;white-space:nowrap}.arriving{color:#16702e}.quiet{color:#8a6d00}
.none{color:#777}.block{color:#555}.failed{color:#b00020}.open{color:#1f5fa8}.removed{color:#8a3b00}
.target.up{color:#16702e}.target.down{color:#b00020}
.summary{background:#fff;border:1px solid #ddd;padding:.6em .8em;margin:0 0 1em}
.summary p{margin:.2em 0}.chart{margin:0 0 1em}.chart svg{display:block;max-width:100%}
.chart figcaption{font-size:12px;color:#555}.key{margin-right:.8em;white-space:nowrap}
.key span{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
td.spark svg{display:block;width:160px}.wide{overflow-x:auto}
td.addr{overflow-wrap:anywhere;min-width:9em}.client{color:#555;font-size:12px;overflow-wrap:anywhere}
td.name{overflow-wrap:anywhere;min-width:8em}td.last{min-width:9em}
.alarms li.warning{color:#8a3b00}p.window{margin:0 0 .3em;font-size:12px;color:#555}
p.reload{margin:0 0 1em}p.reload.failed{color:#b00020}p.reload .detail{color:#555;font-size:12px}
#clients details{margin:.3em 0}#clients summary{cursor:pointer}table.clients{margin:.4em 0 .8em}
</style></head><body>
<h1>portbounce</h1>
<p class="meta">${escape(report.source)} &middot; version ${escape(report.version)} &middot; up ${
    span(now - Date.parse(report.started))
  } &middot; ${countOf(report.totals.active, "live session")} &middot; updated ${
    escape(report.now)
  } (every ${REFRESH_SECONDS}s)</p>
${lastReload(report, now)}
${summary(report, now)}
${chart(report, window)}
<div class="wide"><table id="rules"><thead><tr><th>rule</th><th>state</th><th>new sessions / min (${
    historyText(report.history_minutes)
  })</th><th>listen</th><th>target</th>
<th>clients 1m / 15m / 60m</th><th>sessions active / total</th><th>last session, client</th>
<th>blocked</th><th>errors</th><th>bytes up / down</th></tr></thead>
<tbody>
${ruleRows}
</tbody></table></div>
${clients === null ? "" : clientsSection(clients.report, clients.windowMs, now)}
${alarmsList(report, now)}
<div class="wide"><table id="listeners"><thead><tr><th>listener</th><th>socket</th><th>rules</th><th>active</th><th>sessions</th><th>blocked</th></tr></thead>
<tbody>
${listenerRows}
</tbody></table></div>
</body></html>
`;
}
