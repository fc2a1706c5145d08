/**
 * Per-minute history and alarms with an injected clock: no sleeping.
 */
import { assert, assertEquals } from "../assert.ts";
import { History, minuteOf } from "../../src/status/history.ts";
import { Alarms } from "../../src/status/alarms.ts";
import { Stats } from "../../src/status/stats.ts";
import { svgSparkline, unicodeSparkline } from "../../src/status/sparkline.ts";
import { loadRules } from "../fixtures/rules.ts";

const T0 = minuteOf(Date.UTC(2026, 10, 28, 9, 0)); // 09:00:00 UTC
const MIN = 60_000;

Deno.test("history: sessions, distinct clients, bytes, errors and blocks per minute; gaps are empty", () => {
  const stats = new Stats();
  const [listener, pair, rule] = stats.of("web", "tcp 127.0.0.1:80");
  const history = new History(10 * MIN);
  const start = (client: string, at: number) => {
    history.sessionStarted("rule:web", client, at, rule);
    for (const c of [listener, pair, rule]) c.total++;
  };
  start("198.51.100.7", T0 + 1_000);
  start("198.51.100.7", T0 + 2_000);
  start("198.51.100.8", T0 + 3_000);
  rule.bytesUp += 100;
  rule.bytesDown += 5_000;
  rule.errors += 1;
  rule.blocked.rule = 4;
  start("198.51.100.9", T0 + 3 * MIN + 1); // Minutes 1 and 2 pass without traffic.
  history.advance(T0 + 4 * MIN, () => rule);
  // The minute under way shows what it has so far: a session 5 s into it.
  start("198.51.100.9", T0 + 4 * MIN + 5_000);
  const buckets = history.buckets("rule:web", 5, T0 + 4 * MIN + 6_000, rule);
  assertEquals(buckets.map((b) => b.minute), [0, 1, 2, 3, 4, 5].map((i) => T0 - MIN + i * MIN));
  assertEquals(buckets[1], {
    minute: T0,
    sessions: 3,
    clients: 2,
    bytes_up: 100,
    bytes_down: 5_000,
    errors: 1,
    blocked: 4,
  });
  assertEquals([buckets[2].sessions, buckets[3].sessions, buckets[4].sessions], [0, 0, 1]);
  assertEquals(buckets[4].clients, 1);
  assertEquals(buckets[4].partial, undefined);
  assertEquals(buckets[5], {
    minute: T0 + 4 * MIN,
    sessions: 1,
    clients: 1,
    bytes_up: 0,
    bytes_down: 0,
    errors: 0,
    blocked: 0,
    partial: true,
  });
});

Deno.test("history: the window wraps; a key without history reads as empty minutes; keep() forgets", () => {
  const stats = new Stats();
  const rule = stats.of("web", "l")[2];
  const history = new History(3 * MIN);
  for (let m = 0; m < 10; m++) {
    history.sessionStarted("rule:web", "c", T0 + m * MIN + 10, rule);
    rule.total++;
  }
  history.advance(T0 + 10 * MIN, () => rule);
  const buckets = history.buckets("rule:web", 100, T0 + 10 * MIN, rule);
  assertEquals(buckets.length, 4, "at most the window, and the minute under way");
  assertEquals(buckets.map((b) => b.sessions), [1, 1, 1, 0]);
  assertEquals(buckets.map((b) => b.partial), [undefined, undefined, undefined, true]);
  const none = history.buckets("rule:none", 2, T0, undefined);
  assertEquals(none.map((b) => [b.sessions, b.partial]), [[0, undefined], [0, undefined], [
    0,
    true,
  ]]);
  history.keep(new Set());
  assertEquals(history.size, 0);
});

Deno.test("alarms: first traffic once, quiet after alarm_quiet, resumed, errors over the rate", () => {
  const config = loadRules(`
[[rule]]
name = "web"
listen = "127.0.0.1:80"
bounce_to = "127.0.0.1:81"
alarm_quiet = "15m"
alarm_errors = "10/1m"
`);
  const alarms = new Alarms();
  let firstSession: number | null = null;
  let lastSession: number | null = null;
  let errors = 0;
  const raised = (t: number) =>
    alarms.evaluate(config.rules, () => ({ firstSession, lastSession, errors }), t);
  const at = (t: number) => raised(t).map((a) => a.kind);
  assertEquals(at(T0), [], "nothing before traffic, and never quiet without traffic");
  firstSession = T0 + 1_000;
  lastSession = T0 + 1_040;
  // Raised at the tick, it says when the first session came, not when the tick came.
  assertEquals(raised(T0 + 2_000).map((a) => [a.kind, a.at]), [["first-traffic", T0 + 1_000]]);
  assertEquals(at(T0 + 14 * MIN), []);
  assertEquals(at(T0 + 16 * MIN), ["quiet"]);
  assertEquals(at(T0 + 17 * MIN), [], "said once");
  assertEquals(alarms.active(), [{ rule: "web", kind: "quiet" }]);
  lastSession = T0 + 18 * MIN;
  assertEquals(at(T0 + 18 * MIN + 1), ["resumed"]);
  errors = 5;
  assertEquals(at(T0 + 19 * MIN), []);
  errors = 20;
  assertEquals(at(T0 + 19 * MIN + 30_000), ["errors"]);
  assertEquals(at(T0 + 22 * MIN), [], "cleared when the rate falls");
  assert(alarms.recent().length === 4);
  assertEquals(alarms.counts.get("web\u0000quiet"), 1);
});

Deno.test("terminal sparkline: eight heights, a space for nothing", () => {
  assertEquals(unicodeSparkline([0, 1, 2, 4, 8]), " ▁▂▄█");
  assertEquals(unicodeSparkline([0, 0]), "  ");
});

Deno.test("svg sparkline: flat stretches are two points, every change keeps its corners", () => {
  const pointsOf = (svg: string) => /points="([^"]*)"/.exec(svg)![1].split(" ");
  assertEquals(pointsOf(svgSparkline(new Array(1_440).fill(0), "quiet", null)).length, 2);
  const step = [...new Array(100).fill(0), ...new Array(100).fill(4)];
  // Start, the last 0, the first 4, the end: the line draws the same step as 200 points.
  assertEquals(pointsOf(svgSparkline(step, "step", 100)), [
    "0.0,31.0",
    `${(99 * 240 / 199).toFixed(1)},31.0`,
    `${(100 * 240 / 199).toFixed(1)},1.0`,
    "240.0,1.0",
  ]);
});

Deno.test("history: kept across a restart, a later minute puts back what each minute had", () => {
  const stats = new Stats();
  const rule = stats.of("web", "l")[2];
  const before = new History(60 * MIN);
  for (const at of [T0 + 1_000, T0 + 2_000, T0 + 3_000, T0 + MIN + 5_000]) {
    before.sessionStarted("rule:web", "198.51.100.7", at, rule);
    rule.total++;
  }
  // Written 30 s into the second minute: the first closed, the second as far as it got.
  const saved = before.export(T0 + MIN + 30_000, () => rule);
  assertEquals(saved["rule:web"].map((b) => [b.minute - T0, b.sessions]), [[0, 3], [MIN, 1]]);
  const after = new History(60 * MIN);
  after.import(saved, T0 + 5 * MIN);
  const buckets = after.buckets("rule:web", 5, T0 + 5 * MIN, undefined);
  assertEquals(buckets.map((b) => b.sessions), [3, 1, 0, 0, 0, 0]);
  // A minute the window no longer covers is not put back.
  const late = new History(3 * MIN);
  late.import(saved, T0 + 10 * MIN);
  assertEquals(late.buckets("rule:web", 2, T0 + 10 * MIN, undefined).map((b) => b.sessions), [
    0,
    0,
    0,
  ]);
});
