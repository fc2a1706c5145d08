/**
 * The status endpoint end to end: /status.json against traffic actually sent,
 * /metrics through a real Prometheus text parser, the page, the CLI.
 */
import { chromiumInstalled, chromiumRun } from "../chromium.ts";
import parsePrometheus from "parse-prometheus-text-format";
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import {
  echo,
  exchangeFrom,
  freePortRange,
  readAll,
  runCli,
  startBouncer,
  tcpServer,
  writeAll,
} from "./helpers.ts";

const RULES = (target: number) => `
[server]
status = "127.0.0.1:0"

[[rule]]
name = "lab-blocked"
action = "block"
listen = "127.0.0.1:0"
from = "127.0.0.9"

[[rule]]
name = "web"
listen = "127.0.0.1:0"
bounce_to = "127.0.0.1:${target}"
`;

/** Sends `size` bytes and reads the echo. */
async function exchange(port: number, size: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new Uint8Array(size));
  await conn.closeWrite();
  assertEquals((await readAll(conn)).length, size);
  conn.close();
}

async function withTraffic() {
  const target = tcpServer(echo);
  const bouncer = await startBouncer(RULES(target.port));
  const port = bouncer.port();
  await exchange(port, 1000);
  await exchange(port, 2345);
  assertEquals((await exchangeFrom("127.0.0.2", port, "x")).data, "x");
  assertEquals((await exchangeFrom("127.0.0.9", port, "y")).data, "");
  // Every session's end, whichever isolate relayed it (a worker reports a little later).
  await bouncer.log.waitFor({ event: "disconnect", rule: "web" }, 10_000, 3);
  await bouncer.log.waitFor({ event: "block", rule: "lab-blocked" });
  return { target, bouncer, base: `http://${bouncer.ready.status}` };
}

Deno.test("/status.json counts what was actually sent", async () => {
  const { target, bouncer, base } = await withTraffic();
  await using _t = target;
  await using _b = bouncer;
  const response = await fetch(`${base}/status.json`);
  assertEquals(response.headers.get("content-type"), "application/json");
  const status = await response.json();
  const web = status.rules.find((r: { name: string }) => r.name === "web");
  assertEquals(web.total, 3);
  assertEquals(web.active, 0);
  assertEquals(web.bytes_up, 1000 + 2345 + 1);
  assertEquals(web.bytes_down, 1000 + 2345 + 1);
  assertEquals(web.errors, 0);
  assertEquals([web.clients_1m, web.clients_15m, web.clients_60m], [2, 2, 2]);
  assertMatch(web.last_client, /^127\.0\.0\.2:\d+$/);
  assert(Date.parse(web.first_session) <= Date.parse(web.last_session));
  const blocked = status.rules.find((r: { name: string }) => r.name === "lab-blocked");
  assertEquals(blocked.blocked, { rule: 1 });
  assertEquals(status.listeners.length, 1);
  assertEquals(status.listeners[0].bound, `127.0.0.1:${bouncer.port()}`);
  assertEquals(status.listeners[0].rules, ["lab-blocked", "web"]);
  assertEquals(status.listeners[0].blocked, { rule: 1 });
  assertEquals(status.totals.total, 3);
});

Deno.test("/metrics parses as Prometheus text and carries the same numbers", async () => {
  const { target, bouncer, base } = await withTraffic();
  await using _t = target;
  await using _b = bouncer;
  const response = await fetch(`${base}/metrics`);
  assertMatch(response.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  // Prometheus rejects a scrape that gives one series twice.
  const series = text.split("\n").filter((line) => line && !line.startsWith("#"))
    .map((line) => line.slice(0, line.lastIndexOf(" ")));
  assertEquals(series.filter((s, i) => series.indexOf(s) !== i), [], "series given twice");
  assert(series.some((s) => s.startsWith("portbounce_target_up{")), "target series present");
  const families = parsePrometheus(text) as {
    name: string;
    type: string;
    metrics: { value: string; labels?: Record<string, string> }[];
  }[];
  const family = (name: string) => families.find((f) => f.name === name)!;
  const web = { rule: "web", protocol: "tcp", listen: "127.0.0.1:0" };
  const value = (name: string, labels: Record<string, string>) =>
    Number(
      family(name).metrics.find((m) =>
        Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
      )
        ?.value,
    );
  assertEquals(family("portbounce_sessions_total").type, "COUNTER");
  assertEquals(family("portbounce_sessions_active").type, "GAUGE");
  assertEquals(value("portbounce_sessions_total", web), 3);
  assertEquals(value("portbounce_bytes_total", { ...web, direction: "up" }), 3346);
  assertEquals(value("portbounce_bytes_total", { ...web, direction: "down" }), 3346);
  assertEquals(value("portbounce_blocked_total", { rule: "lab-blocked", reason: "rule" }), 1);
  assertEquals(value("portbounce_listener_up", { protocol: "tcp", listen: "127.0.0.1:0" }), 1);
  assertEquals(value("portbounce_rule_clients", { rule: "web", window: "15m" }), 2);
});

Deno.test("the page shows a row per rule, is self-contained and refreshes itself", async () => {
  const { target, bouncer, base } = await withTraffic();
  await using _t = target;
  await using _b = bouncer;
  const response = await fetch(`${base}/`);
  assertMatch(response.headers.get("content-type")!, /^text\/html/);
  const html = await response.text();
  assertIncludes(html, '<meta http-equiv="refresh"');
  assertMatch(html, /<tr class="rule" data-rule="web">[\s\S]*?traffic arriving/);
  assertMatch(html, /<tr class="rule" data-rule="lab-blocked">[\s\S]*?block rule/);
  assert(!/(src|href)=["']?(https?:)?\/\//.test(html), "no external assets");
});

Deno.test("the endpoint is read-only and says where to look", async () => {
  const { target, bouncer, base } = await withTraffic();
  await using _t = target;
  await using _b = bouncer;
  const post = await fetch(`${base}/status.json`, { method: "POST", body: "x" });
  assertEquals(post.status, 405);
  assertEquals(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
  const missing = await fetch(`${base}/admin`);
  assertEquals(missing.status, 404);
  assertIncludes(await missing.text(), "/status.json");
});

Deno.test("portbounce status prints the counters, or exits 1 without an answer", async () => {
  const { target, bouncer, base } = await withTraffic();
  await using _t = target;
  await using _b = bouncer;
  const text = await runCli(["status", "--url", base]);
  assertEquals(text.code, 0, text.stderr);
  // The sparkline's last character is the minute under way: the sessions show at once.
  assertMatch(text.stdout, /^web\s+█\s+0\/3\s+2\/2\/2\s+\d+s ago\s+0\s+0\s+3\.3 KiB\/3\.3 KiB$/m);
  assertMatch(
    text.stdout,
    /^lab-blocked\s+\(block rule\)\s+0\/0\s+1\/1\/1\s+never\s+1\s+0\s+0 B\/0 B$/m,
  );
  const wide = await runCli(["status", "--url", base, "--wide"]);
  assertMatch(
    wide.stdout,
    /^web\s+█\s+pass\s+0\s+3\s+2\/2\/2\s+\d+s ago\s+127\.0\.0\.\d+:\d+\s+0\s+0\s+3346\/3346$/m,
  );
  const json = await runCli(["status", "--url", base, "--json"]);
  assertEquals(JSON.parse(json.stdout).totals.total, 3);
  const port = freePortRange(1);
  const none = await runCli(["status", "--url", `http://127.0.0.1:${port}`]);
  assertEquals(none.code, 1);
  assertIncludes(none.stderr, `no answer from http://127.0.0.1:${port}/status.json`);
});

Deno.test("a status address that cannot be bound exits 3 and binds nothing", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dir = await Deno.makeTempDir();
  try {
    const port = freePortRange(1);
    await Deno.writeTextFile(
      `${dir}/rules.toml`,
      `[server]\nstatus = "127.0.0.1:${holder.addr.port}"\n[[rule]]\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:9"\n`,
    );
    const result = await runCli(["run", "-c", `${dir}/rules.toml`]);
    assertEquals(result.code, 3);
    assertIncludes(
      result.stderr,
      `cannot bind the status endpoint 127.0.0.1:${holder.addr.port}: address already in use`,
    );
    const probe = Deno.listen({ hostname: "127.0.0.1", port });
    probe.close();
  } finally {
    holder.close();
    await Deno.remove(dir, { recursive: true });
  }
});

const chromium = chromiumInstalled;
if (!chromium) {
  console.warn("chromium is not installed: the browser test is skipped (apt-get install chromium)");
}

Deno.test({
  name: "the page renders in headless Chromium with its rule rows",
  ignore: !chromium,
  async fn() {
    const { target, bouncer, base } = await withTraffic();
    await using _t = target;
    await using _b = bouncer;
    const dom = await chromiumRun(["--dump-dom", `${base}/`]);
    assertMatch(dom, /<tr class="rule" data-rule="web">/);
    assertMatch(dom, /<tr class="rule" data-rule="lab-blocked">/);
    assertIncludes(dom, "traffic arriving");
  },
});
