/**
 * What the page, `/metrics` and `portbounce status` make of a report: the
 * quiet window per rule, the chart's window and time range, the last reload,
 * plurals, and the terminal table's width.
 */
import { RenderCache } from "../../src/status/routes.ts";
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import { buildStatusReport, type StatusReport } from "../../src/status/report.ts";
import { Stats } from "../../src/status/stats.ts";
import { chooseWindow, renderStatusPage, ruleState } from "../../src/status/page.ts";
import { svgChart } from "../../src/status/sparkline.ts";
import { renderMetrics } from "../../src/status/metrics.ts";
import { renderStatusText, STATUS_COLUMNS } from "../../src/cli/status.ts";
import { loadRules } from "../fixtures/rules.ts";

const MINUTE = 60_000;
const NOW = Date.parse("2026-12-06T05:00:30Z");

/** A report of `rules` (rule-file text) at NOW, with no traffic yet. */
function reportOf(rules: string): StatusReport {
  const config = loadRules(rules);
  return buildStatusReport({
    version: "test",
    source: "rules.toml",
    startedAt: NOW - 3 * MINUTE,
    now: NOW,
    rules: config.rules,
    listeners: [],
    stats: new Stats(),
    sessions: [],
    log: { lines_failed: 0, lines_dropped: 0, last_error: null },
    buffers: { budget_bytes: 1024, in_use_bytes: 0, refused: 0 },
    targets: new Map(),
    ruleTargets: new Map(),
    history: () => [],
    historyMinutes: 0,
    alarms: { active: [], recent: [], counts: [] },
    lastReload: null,
  });
}

/** The same report with the named rule's fields changed. */
function withRule(
  report: StatusReport,
  name: string,
  change: Partial<StatusReport["rules"][number]>,
): StatusReport {
  return { ...report, rules: report.rules.map((r) => r.name === name ? { ...r, ...change } : r) };
}

const RULES = `
[[rule]]
name = "dns"
protocol = "udp"
listen = "127.0.0.1:53"
bounce_to = "127.0.0.1:5353"
alarm_quiet = "2m"
[[rule]]
name = "web"
listen = "127.0.0.1:80"
bounce_to = "127.0.0.1:8080"
`;

const ago = (ms: number) => new Date(NOW - ms).toISOString();

Deno.test("a rule goes quiet after its alarm_quiet, or after 5 minutes without one", () => {
  const report = reportOf(RULES);
  const dns = (lastMs: number) =>
    ruleState(withRule(report, "dns", { last_session: ago(lastMs) }).rules[0], NOW);
  const web = (lastMs: number) =>
    ruleState(withRule(report, "web", { last_session: ago(lastMs) }).rules[1], NOW);
  assertEquals(report.rules.map((r) => r.quiet_after_s), [120, 300]);
  // Before: anything over a minute was "quiet", whatever alarm_quiet said.
  assertEquals(dns(90_000), "arriving");
  assertEquals(dns(2 * MINUTE), "quiet");
  assertEquals(web(4 * MINUTE), "arriving");
  assertEquals(web(5 * MINUTE + 1), "quiet");
  const open = withRule(report, "web", { last_session: ago(10 * MINUTE), active: 2 });
  assertEquals(ruleState(open.rules[1], NOW), "open");
  const page = renderStatusPage(open);
  assertIncludes(page, "Gone quiet: <b>web</b> (no new session for 10m, 2 sessions open)");
});

Deno.test("the summary counts one client as one client", () => {
  const report = withRule(reportOf(RULES), "web", {
    last_session: ago(5_000),
    first_session: ago(60_000),
    clients_15m: 1,
  });
  assertIncludes(renderStatusPage(report), "<b>web</b> (1 client in 15m, first 1m ago)");
});

Deno.test("the chart's window: fitted to the time since start, or a choice within history", () => {
  assertEquals(chooseWindow(null, 20 * MINUTE + 5_000, 1440), {
    minutes: 21,
    chosen: "fitted",
    choices: ["1h", "6h", "24h"],
    fitted: 21,
  });
  assertEquals(chooseWindow(null, 30_000, 1440).minutes, 10);
  assertEquals(chooseWindow("bogus", 3 * 1440 * MINUTE, 1440).minutes, 1440);
  assertEquals(chooseWindow("6h", MINUTE, 1440), {
    minutes: 360,
    chosen: "6h",
    choices: ["1h", "6h", "24h"],
    fitted: 10,
  });
  // Beyond the history kept: not offered, and asking for it gets the fitted window.
  assertEquals(chooseWindow("24h", 5 * MINUTE, 120), {
    minutes: 10,
    chosen: "fitted",
    choices: ["1h"],
    fitted: 10,
  });
  const page = renderStatusPage(reportOf(RULES), chooseWindow("1h", MINUTE, 1440));
  // No chart without history, so no links either; with history they show.
  assert(!page.includes("?window="));
  const minute = (i: number) => ({
    minute: NOW - (60 - i) * MINUTE,
    sessions: i % 3,
    clients: 1,
    bytes_up: 0,
    bytes_down: 0,
    errors: 0,
    blocked: 0,
  });
  const withHistory = withRule(reportOf(RULES), "web", {
    history: Array.from({ length: 60 }, (_, i) => minute(i)),
  });
  // A chosen window: the "since start" link still names the time since start.
  const chosen = renderStatusPage(withHistory, chooseWindow("24h", 21 * MINUTE, 1440));
  assertIncludes(chosen, '<a href="/?window=fitted">since start (21m)</a>');
  assertIncludes(chosen, "<b>24h</b>");
});

Deno.test("the chart's range runs to the end of its last minute, with dates across midnight", () => {
  const day = Array.from(
    { length: 1440 },
    (_, i) => Date.parse("2026-12-05T05:01:00Z") + i * MINUTE,
  );
  const chart = svgChart([{ name: "web", values: day.map((_, i) => i % 7) }], day);
  // Before: "05:01 – 05:00 UTC" and a scale label clipped inside the stretched drawing.
  assertIncludes(chart, "12-05 05:01 – 12-06 05:01 UTC; peak 6 new sessions/min");
  assert(!chart.includes("<text"), "no text inside the stretched SVG");
  const hour = day.slice(-60);
  assertIncludes(svgChart([{ name: "web", values: hour.map(() => 0) }], hour), "04:01 – 05:01 UTC");
});

Deno.test("the last reload: on the page, in /metrics, in portbounce status", () => {
  const base = reportOf(RULES);
  const stats = new Stats();
  const inForce = { rules: new Set(["dns", "web"]), listeners: new Set<string>() };
  const metric = (report: StatusReport, name: string) =>
    renderMetrics(report, stats, NOW - 3 * MINUTE, inForce).split("\n").find((l) =>
      l.startsWith(`${name} `)
    );
  // No reload yet: the start counts as the last success.
  assertEquals(metric(base, "portbounce_last_reload_success"), "portbounce_last_reload_success 1");
  assertEquals(
    metric(base, "portbounce_last_reload_timestamp_seconds"),
    `portbounce_last_reload_timestamp_seconds ${(NOW - 3 * MINUTE) / 1000}`,
  );
  assert(!renderStatusPage(base).includes('id="reload"'));
  const refused: StatusReport = {
    ...base,
    last_reload: {
      at: ago(2 * MINUTE),
      result: "refused",
      summary: "1 problem in rules.toml",
      problems: ['rules.toml:3: unknown key "listne" (did you mean "listen"?)'],
    },
  };
  assertEquals(
    metric(refused, "portbounce_last_reload_success"),
    "portbounce_last_reload_success 0",
  );
  assertEquals(
    metric(refused, "portbounce_last_reload_timestamp_seconds"),
    `portbounce_last_reload_timestamp_seconds ${(NOW - 2 * MINUTE) / 1000}`,
  );
  const page = renderStatusPage(refused);
  assertMatch(page, /<p class="reload failed" id="reload">Last reload 2m ago <b>refused<\/b>/);
  assertIncludes(page, "unknown key &quot;listne&quot;");
  const text = renderStatusText(refused);
  assertIncludes(text, "last reload 2m ago: refused: 1 problem in rules.toml");
  assertIncludes(text, '  rules.toml:3: unknown key "listne"');
  const applied: StatusReport = {
    ...base,
    last_reload: { at: ago(5_000), result: "applied", summary: "listeners: 0 added", problems: [] },
  };
  assertEquals(
    metric(applied, "portbounce_last_reload_success"),
    "portbounce_last_reload_success 1",
  );
  assertMatch(renderStatusPage(applied), /Last reload 5s ago: applied\./);
});

Deno.test("portbounce status fits 100 columns; --wide shows every column", () => {
  const long = "a-rather-long-rule-name-for-the-web-frontend";
  let report = reportOf(`
[[rule]]
name = "${long}"
listen = "127.0.0.1:80"
bounce_to = ["127.0.0.1:8080", "127.0.0.1:8081"]
[[rule]]
name = "lab"
action = "block"
listen = "127.0.0.1:81"
`);
  report = withRule(report, long, {
    active: 12,
    total: 123_456,
    clients_1m: 10,
    clients_15m: 150,
    clients_60m: 1_200,
    bytes_up: 12_345_678_901,
    bytes_down: 98_765_432_101,
    last_session: ago(5_000),
    last_client: "203.0.113.77:51234",
    targets: ["127.0.0.1:8080", "127.0.0.1:8081"].map((target, i) => ({
      target,
      up: i === 0,
      since: ago(MINUTE),
      failures: i * 3,
      last_error: i === 0 ? null : "connection refused by the target after a long wait",
      checked: true,
      active: 6,
      total: 61_728,
      errors: i,
      bytes_up: 6_172_839_450,
      bytes_down: 49_382_716_050,
    })),
  });
  report = {
    ...report,
    listeners: [{
      key: "tcp 127.0.0.1:80",
      protocol: "tcp",
      bound: "127.0.0.1:80",
      error: null,
      rules: [long],
      ...report.totals,
    }, {
      key: "tcp [2001:db8:4006:812::200e]:443",
      protocol: "tcp",
      bound: null,
      error: "cannot assign requested address (not an address of this host: check the interface)",
      rules: [long],
      ...report.totals,
    }, {
      key: "udp [2001:db8:ffff:1234:5678:9abc:def0:1234]:53",
      protocol: "udp",
      bound: "[2001:db8:ffff:1234:5678:9abc:def0:1234]:53",
      error: null,
      rules: [long],
      ...report.totals,
    }],
  };
  const text = renderStatusText(report);
  const widest = Math.max(...text.split("\n").map((line) => line.length));
  // Before: 165 columns.
  assert(widest <= STATUS_COLUMNS, `${widest} columns:\n${text}`);
  assertMatch(text, /^a-rather-long-rule-name…\s/m);
  assertMatch(text, /11\.5 GiB\/92 GiB/);
  const wide = renderStatusText(report, true);
  assertIncludes(wide, long);
  assertIncludes(wide, "12345678901/98765432101");
  assertIncludes(wide, "203.0.113.77:51234");
  assertIncludes(wide, "connection refused by the target after a long wait");
});

Deno.test("the render cache keeps renderings within a byte budget, and one too large not at all", () => {
  const cache = new RenderCache(60_000, 64, 1_000);
  let renders = 0;
  const body = (c: string) => () => {
    renders++;
    return c.repeat(300); // 600 bytes counted
  };
  cache.get("a", body("a"), 0);
  cache.get("a", body("a"), 1);
  assertEquals(renders, 1, "reused");
  cache.get("b", body("b"), 2); // 1,200 bytes: "a" goes
  cache.get("b", body("b"), 3);
  cache.get("a", body("a"), 4);
  assertEquals(renders, 3, "b reused, a rendered again");
  cache.get("big", () => {
    renders++;
    return "x".repeat(600);
  }, 5);
  cache.get("big", () => {
    renders++;
    return "x".repeat(600);
  }, 6);
  assertEquals(renders, 5, "never kept");
});
