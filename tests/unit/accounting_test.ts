/**
 * Session accounting without sockets: the tracker behind every session
 * handle, the counters, `/metrics`, and the text log line.
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { getLogger } from "@logtape/logtape";
import { RuleLimiter } from "../../src/relay/limits.ts";
import type { Admitted } from "../../src/relay/host.ts";
import type { DisconnectReason, SessionSetup } from "../../src/relay/session.ts";
import type { PassRule } from "../../src/config/types.ts";
import { SessionTracker } from "../../src/server/tracker.ts";
import { EventGate } from "../../src/log/rate_limit.ts";
import { Stats } from "../../src/status/stats.ts";
import { renderMetrics } from "../../src/status/metrics.ts";
import { buildStatusReport } from "../../src/status/report.ts";
import { renderSessionEvent } from "../../src/log/events.ts";
import { loadRules } from "../fixtures/rules.ts";
import parsePrometheus from "parse-prometheus-text-format";

const CONFIG = loadRules(`
[[rule]]
name = "web"
listen = "127.0.0.1:80"
bounce_to = "127.0.0.1:8080"
max_sessions = 2
log = []
`);
const RULE = CONFIG.rules[0] as PassRule;

function setup(client: string): SessionSetup {
  return {
    protocol: "tcp",
    listenerKey: "tcp 127.0.0.1:80",
    client: `${client}:4000`,
    clientIp: client,
    listen: "127.0.0.1:80",
    target: "127.0.0.1:8080",
  };
}

function admit(limiter: RuleLimiter, client: string): Admitted {
  const admission = limiter.admit(client, 0);
  assert(!("refused" in admission));
  return { setup: setup(client), rule: RULE, admission };
}

Deno.test("tracker: one handle accounts for a session's life, once", async () => {
  const stats = new Stats();
  const tracker = new SessionTracker(getLogger(["test"]), stats, new EventGate());
  const limiter = new RuleLimiter(RULE);
  const closed: DisconnectReason[] = [];
  const handle = tracker.open(admit(limiter, "10.0.0.1"), { close: (r) => closed.push(r) });
  assertEquals([tracker.size, limiter.active, stats.rules.get("web")!.active], [1, 1, 1]);
  handle.connected({
    target: "127.0.0.1:8080",
    local: "127.0.0.1:50000",
    remote: "127.0.0.1:8080",
  });
  handle.delivered("up", 100);
  handle.delivered("down", 250);
  handle.error("target: connection reset");
  const listed = tracker.list()[0];
  assertEquals([listed.local, listed.bytesUp, listed.bytesDown], ["127.0.0.1:50000", 100, 250]);
  const empty = tracker.whenEmpty();
  tracker.closeAll("shutdown");
  assertEquals(closed, ["shutdown"]);
  handle.ended("shutdown");
  handle.ended("shutdown"); // A second end changes nothing.
  await empty;
  const web = stats.rules.get("web")!;
  assertEquals([tracker.size, limiter.active, web.active], [0, 0, 0]);
  assertEquals([web.total, web.bytesUp, web.bytesDown, web.errors], [1, 100, 250, 1]);
});

Deno.test("tracker: closeAll selects, whenEmpty waits for the last", async () => {
  const tracker = new SessionTracker(getLogger(["test"]), new Stats(), new EventGate());
  const limiter = new RuleLimiter({ ...RULE, maxSessions: 0 });
  const handles = ["10.0.0.1", "10.0.0.2"].map((ip) =>
    tracker.open(admit(limiter, ip), {
      close: () => handles.find((_, i) => i === (ip === "10.0.0.1" ? 0 : 1))!.ended("drained"),
    })
  );
  tracker.closeAll("drained", (s) => s.setup.clientIp === "10.0.0.1");
  assertEquals(tracker.size, 1);
  let done = false;
  const waiting = tracker.whenEmpty().then(() => done = true);
  await Promise.resolve();
  assert(!done);
  handles[1].ended("client-closed");
  await waiting;
});

Deno.test("Stats: a session counts on its listener, its (rule, listener) pair and its rule", () => {
  const stats = new Stats();
  const counters = stats.of("web", "tcp 127.0.0.1:80");
  assertEquals(counters.length, 3);
  stats.of(null, "tcp 127.0.0.1:80");
  assertEquals(stats.of(null, "tcp 127.0.0.1:80").length, 2, "no rule, no rule counters");
  for (const c of counters) c.bytesUp += 5;
  assertEquals(stats.totals().bytesUp, 5, "totals add listeners, each session once");
});

Deno.test("/metrics renders every counter with its labels, parseably", () => {
  const stats = new Stats();
  const tracker = new SessionTracker(getLogger(["test"]), stats, new EventGate());
  const handle = tracker.open(admit(new RuleLimiter(RULE), "10.0.0.1"), { close() {} });
  handle.delivered("up", 7);
  const report = buildStatusReport({
    version: "test",
    source: "rules.toml",
    startedAt: 0,
    now: 1_000,
    rules: CONFIG.rules,
    listeners: [{
      key: "tcp 127.0.0.1:80",
      protocol: "tcp",
      bound: "127.0.0.1:80",
      error: null,
      rules: ["web"],
    }],
    stats,
    sessions: [],
    log: { lines_failed: 0, lines_dropped: 0, last_error: null },
    buffers: { budget_bytes: 1024, in_use_bytes: 0, refused: 0 },
    targets: new Map([["127.0.0.1:8080", {
      up: false,
      since: 0,
      failures: 3,
      lastError: "connection refused",
      checked: false,
    }]]),
    ruleTargets: new Map([["web", ["127.0.0.1:8080"]]]),
    history: () => [],
    historyMinutes: 0,
    alarms: { active: [{ rule: "web", kind: "quiet" }], recent: [], counts: [] },
    lastReload: null,
  });
  const inForce = { rules: new Set(["web"]), listeners: new Set(["tcp 127.0.0.1:80"]) };
  const text = renderMetrics(report, stats, 0, inForce);
  const families = parsePrometheus(text) as {
    name: string;
    metrics: { labels?: Record<string, string>; value: string }[];
  }[];
  const bytes = families.find((f) => f.name === "portbounce_bytes_total")!;
  const up = bytes.metrics.find((m) => m.labels?.direction === "up" && m.labels?.rule === "web")!;
  assertEquals(up.value, "7");
  assertEquals(up.labels!.listen, "127.0.0.1:80");
  assertIncludes(text, 'portbounce_listener_up{protocol="tcp",listen="127.0.0.1:80"} 1');
  assertIncludes(text, 'portbounce_target_up{rule="web",target="127.0.0.1:8080"} 0');
  assertIncludes(text, 'portbounce_alarm_active{rule="web",alarm="quiet"} 1');
});

Deno.test("the text log line names everything in SPEC order", () => {
  assertEquals(
    renderSessionEvent({
      event: "disconnect",
      action: "pass",
      rule: "web",
      protocol: "tcp",
      client: "198.51.100.7:51234",
      listen: "203.0.113.10:80",
      target: "192.0.2.10:80",
      bytes_up: 412,
      bytes_down: 18211,
      duration_ms: 2_400,
      reason: "client-closed",
    }),
    "pass(web) tcp disconnect 198.51.100.7:51234 -> 203.0.113.10:80 -> 192.0.2.10:80 up=412 down=18211 duration=2.4s reason=client-closed",
  );
  assertEquals(
    renderSessionEvent({
      event: "block",
      action: "block",
      rule: null,
      protocol: "udp",
      client: "198.51.100.9:40022",
      listen: "203.0.113.10:53",
      reason: "no-matching-rule",
    }),
    "block(-) udp block 198.51.100.9:40022 -> 203.0.113.10:53 reason=no-matching-rule",
  );
});
