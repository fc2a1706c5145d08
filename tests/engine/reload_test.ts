/**
 * Reloads in-process: what happens to live sessions, limits and listeners
 * when the rule file changes (docs/operations.md, "Reloading").
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { getLogger } from "@logtape/logtape";
import { loadRules, passRule } from "../fixtures/rules.ts";
import type { PassRule } from "../../src/config/types.ts";
import { buildPlan } from "../../src/rules/plan.ts";
import { Engine } from "../../src/server/engine.ts";
import { startDaemon } from "../harness.ts";
import { reloadSpacingMs } from "../../src/daemon/daemon.ts";
import {
  delay,
  echo,
  exchangeFrom,
  freePortRange,
  readAll,
  receiveWithin,
  tcpServer,
  udpEcho,
  udpSocket,
  waitUntil,
  writeAll,
} from "../fixtures/net.ts";

const encode = (text: string) => new TextEncoder().encode(text);

Deno.test("a rule file with no rules is refused on reload; the running rules stay", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startDaemon(passRule({ listen: "127.0.0.1:0", target: target.port }));
  const port = bouncer.port();
  await bouncer.reload("# truncated while being written\n");
  await bouncer.log.waitFor({ level: "error", message: /^reload refused: .* has no rules/ });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, encode("still"));
  await conn.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(conn)), "still");
  conn.close();
});

Deno.test("a changed rule keeps counting its live sessions against its limits", async () => {
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  const rules = (extra: string) =>
    passRule({
      listen: `127.0.0.1:${port}`,
      target: target.port,
      extra: `max_sessions = 2\n${extra}`,
    });
  await using bouncer = await startDaemon(rules(""));
  const live = await Promise.all([1, 2].map(() => Deno.connect({ hostname: "127.0.0.1", port })));
  await bouncer.log.waitFor({ event: "connect" }, 5_000, 2);
  await bouncer.reload(rules('idle_timeout = "1h"'));
  await bouncer.log.waitFor({ message: /^reload: .*1 changed \(r\)/ });
  const third = await Deno.connect({ hostname: "127.0.0.1", port });
  assertEquals(await third.read(new Uint8Array(1)), null);
  third.close();
  await bouncer.log.waitFor({ event: "block", reason: "max_sessions" });
  for (const conn of live) conn.close();
});

Deno.test("removing a rule leaves its TCP sessions running (reload_drain_timeout: no limit by default)", async () => {
  await using target = tcpServer(echo);
  await using other = tcpServer(echo);
  const port = freePortRange(1);
  const keep = passRule({ name: "keep", listen: "127.0.0.1:0", target: other.port });
  await using bouncer = await startDaemon(
    `[server]\ndrain_timeout = "200ms"\n` + keep +
      passRule({ name: "ssh", listen: `127.0.0.1:${port}`, target: target.port }),
  );
  const ssh = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(ssh, encode("a"));
  await bouncer.log.waitFor({ event: "connect", rule: "ssh" });
  await bouncer.reload(`[server]\ndrain_timeout = "200ms"\n` + keep);
  const summary = await bouncer.log.waitFor({ message: /^reload: / });
  assertMatch(summary.message!, /sessions: 1 draining \(until they end\), 0 revoked/);
  await delay(500); // Longer than drain_timeout, which is for shutdown only.
  await writeAll(ssh, encode("b"));
  await ssh.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(ssh)), "ab");
  ssh.close();
  await bouncer.log.waitFor({ event: "disconnect", rule: "ssh", reason: "client-closed" });
});

Deno.test("reload_drain_timeout ends a removed rule's sessions as drained", async () => {
  await using target = tcpServer(echo);
  await using other = tcpServer(echo);
  const port = freePortRange(1);
  const head = `[server]\nreload_drain_timeout = "300ms"\n`;
  const keep = passRule({ name: "keep", listen: "127.0.0.1:0", target: other.port });
  await using bouncer = await startDaemon(
    head + keep + passRule({ name: "old", listen: `127.0.0.1:${port}`, target: target.port }),
  );
  const live = await Deno.connect({ hostname: "127.0.0.1", port });
  await bouncer.log.waitFor({ event: "connect", rule: "old" });
  await bouncer.reload(head + keep);
  assertEquals(await live.read(new Uint8Array(1)), null);
  live.close();
  await bouncer.log.waitFor({ event: "disconnect", rule: "old", reason: "drained" });
});

Deno.test("reload_enforces_rules: clients the new rules refuse lose their TCP and UDP sessions", async () => {
  await using target = tcpServer(echo);
  await using udpTarget = udpEcho();
  const [tcpPort, udpPort] = [freePortRange(1), freePortRange(1)];
  const rules = (from: string) =>
    passRule({
      name: "web",
      listen: `127.0.0.1:${tcpPort}`,
      target: target.port,
      extra: `from = ${from}`,
    }) +
    passRule({
      name: "dns",
      protocol: "udp",
      listen: `127.0.0.1:${udpPort}`,
      target: udpTarget.port,
      extra: `from = ${from}`,
    });
  await using bouncer = await startDaemon(rules('["127.0.0.0/8"]'));
  const staying = exchangeFrom("127.0.0.3", tcpPort, "x"); // Held open until revoked or done.
  const tcpClient = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
  const udpClient = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: udpPort };
    await udpClient.send(encode("q"), to);
    assert(await receiveWithin(udpClient, 1_000));
    await staying;
    await bouncer.log.waitFor({ event: "connect", rule: "web" }, 5_000, 2);
    // 127.0.0.1 is revoked; nobody else is affected.
    await bouncer.reload(rules('["127.0.0.2/31"]'));
    const summary = await bouncer.log.waitFor({ message: /^reload: / });
    assertMatch(summary.message!, /0 draining, 2 revoked/);
    assertEquals(await tcpClient.read(new Uint8Array(1)), null);
    await bouncer.log.waitFor({ event: "disconnect", rule: "web", reason: "revoked" });
    await bouncer.log.waitFor({ event: "disconnect", rule: "dns", reason: "revoked" });
    // New datagrams from the revoked client are refused now.
    await udpClient.send(encode("again"), to);
    assertEquals(await receiveWithin(udpClient, 300), null);
  } finally {
    tcpClient.close();
    udpClient.close();
  }
});

Deno.test("reload_enforces_rules = false keeps sessions the new rules would refuse", async () => {
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  const rules = (from: string) =>
    `[server]\nreload_enforces_rules = false\n` +
    passRule({ listen: `127.0.0.1:${port}`, target: target.port, extra: `from = "${from}"` });
  await using bouncer = await startDaemon(rules("127.0.0.0/8"));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, encode("a"));
  await bouncer.log.waitFor({ event: "connect" });
  await bouncer.reload(rules("127.0.0.2/32"));
  await bouncer.log.waitFor({ message: /0 revoked/ });
  await writeAll(conn, encode("b"));
  await conn.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(conn)), "ab");
  conn.close();
});

Deno.test("a removed UDP listener's flows end once quiet for a moment; its port is freed then", async () => {
  await using target = udpEcho();
  await using other = tcpServer(echo);
  const port = freePortRange(1);
  const keep = passRule({ name: "keep", listen: "127.0.0.1:0", target: other.port });
  await using bouncer = await startDaemon(
    keep +
      passRule({ name: "dns", protocol: "udp", listen: `127.0.0.1:${port}`, target: target.port }),
    { tuning: { udpDrainGraceMs: 300 } },
  );
  const client = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
    await client.send(encode("1"), to);
    assert(await receiveWithin(client, 1_000));
    const started = performance.now();
    await bouncer.reload(keep);
    await bouncer.log.waitFor({ event: "disconnect", rule: "dns", reason: "drained" });
    const waited = performance.now() - started;
    assert(waited < 2_000, `the flow held the reload's drain for ${waited} ms`);
    await waitUntil(() => udpPortIsFree(port), "the UDP port free again", { timeoutMs: 500 });
  } finally {
    client.close();
  }
});

Deno.test("a UDP flow that keeps sending on a removed listener ends at reload_drain_timeout", async () => {
  await using target = udpEcho();
  await using other = tcpServer(echo);
  const port = freePortRange(1);
  const head = `[server]\nreload_drain_timeout = "500ms"\n`;
  const keep = passRule({ name: "keep", listen: "127.0.0.1:0", target: other.port });
  await using bouncer = await startDaemon(
    head + keep +
      passRule({ name: "dns", protocol: "udp", listen: `127.0.0.1:${port}`, target: target.port }),
    { tuning: { udpDrainGraceMs: 300 } },
  );
  const client = udpSocket();
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  let sending = true;
  // Never quiet for the grace: only the drain timeout can end it.
  const chatter = (async () => {
    while (sending) {
      await client.send(encode("q"), to).catch(() => {});
      await delay(50);
    }
  })();
  try {
    await bouncer.log.waitFor({ event: "connect", rule: "dns" });
    const started = performance.now();
    await bouncer.reload(head + keep);
    await bouncer.log.waitFor({ event: "disconnect", rule: "dns", reason: "drained" }, 5_000);
    const waited = performance.now() - started;
    assert(waited >= 400, `ended after ${waited} ms, before reload_drain_timeout`);
    sending = false;
    await chatter;
    await waitUntil(() => udpPortIsFree(port), "the UDP port free again", { timeoutMs: 500 });
  } finally {
    sending = false;
    await chatter;
    client.close();
  }
});

Deno.test("the reload line counts the sessions that reload sends draining, not earlier ones again", async () => {
  await using target = tcpServer(echo);
  await using other = tcpServer(echo);
  const port = freePortRange(1);
  const keep = passRule({ name: "keep", listen: "127.0.0.1:0", target: other.port });
  await using bouncer = await startDaemon(
    keep + passRule({ name: "old", listen: `127.0.0.1:${port}`, target: target.port }),
  );
  const live = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await bouncer.log.waitFor({ event: "connect", rule: "old" });
    await bouncer.reload(keep);
    await bouncer.log.waitFor({ message: /^reload: .*sessions: 1 draining \(until they end\)/ });
    await bouncer.reload(keep + passRule({ name: "new", listen: "127.0.0.1:0", target: 9 }));
    await bouncer.log.waitFor({ message: /^reload: .*1 added \(new\).*sessions: 0 draining/ });
  } finally {
    live.close();
  }
});

Deno.test("a storm of reloads queues at most one: those asked while one waits join it and see the file it reads", async () => {
  const rules = (name: string) => passRule({ name, listen: "127.0.0.1:0", target: 9 });
  await using bouncer = await startDaemon(rules("a"));
  Deno.writeTextFileSync(bouncer.ruleFile, rules("b"));
  // Asked in one go: none has started, so all are one reload.
  await Promise.all(Array.from({ length: 50 }, () => bouncer.daemon.reload()));
  const reloads = () => bouncer.log.filter({ message: /^reload: listeners/ });
  assertEquals(reloads().length, 1, reloads().map((entry) => entry.message).join("\n"));
  assertMatch(reloads()[0].message!, /rules: 1 added \(b\), 0 changed, 1 removed \(a\)/);
  // Once it has run, the next ask is a reload of its own.
  Deno.writeTextFileSync(bouncer.ruleFile, rules("c"));
  await bouncer.daemon.reload();
  assertEquals(reloads().length, 2);
  assertMatch(reloads()[1].message!, /rules: 1 added \(c\)/);
});

Deno.test("reloads are spaced by four times the last one's length, at most 10 s", () => {
  assertEquals([0, 5, 250, 600, 2_500, 60_000].map(reloadSpacingMs), [
    0,
    20,
    1_000,
    2_400,
    10_000,
    10_000,
  ]);
});

Deno.test("a reload waiting for its turn neither holds up a stop nor runs after it", async () => {
  const rules = (name: string) => passRule({ name, listen: "127.0.0.1:0", target: 9 });
  await using bouncer = await startDaemon(rules("a"), { reloadSpacing: () => 60_000 });
  await bouncer.daemon.reload();
  Deno.writeTextFileSync(bouncer.ruleFile, rules("b"));
  const waiting = bouncer.daemon.reload();
  await bouncer.log.waitFor({ message: /^reload: in 1m/ });
  bouncer.daemon.stop("test");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    bouncer.daemon.done.then(() => "stopped"),
    new Promise((resolve) => timer = setTimeout(() => resolve("still waiting"), 10_000)),
  ]);
  clearTimeout(timer);
  assertEquals(outcome, "stopped");
  await waiting;
  assertEquals(bouncer.log.filter({ message: /^reload: listeners/ }).length, 1);
  assertEquals(bouncer.log.filter({ message: /SIGHUP ignored: stopping/ }).length, 1);
});

Deno.test("a rule's until does not wait for the turn of a reload that waits for its own", async () => {
  const until = new Date(Date.now() + 1_000).toISOString();
  const rules = (comment: string) =>
    `# ${comment}\n[[rule]]\nname = "temp"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:9"\nuntil = ${until}\n` +
    passRule({ name: "keep", listen: "127.0.0.1:0", target: 9 });
  await using bouncer = await startDaemon(rules("a"), { reloadSpacing: () => 60_000 });
  await bouncer.reload(rules("b"));
  Deno.writeTextFileSync(bouncer.ruleFile, rules("c"));
  const waiting = bouncer.daemon.reload(); // its turn comes in a minute
  await waitUntil(
    () => !bouncer.daemon.engine.rules.some((rule) => rule.name === "temp"),
    "the rule that ended is out",
    { timeoutMs: 5_000 },
  );
  await waiting;
});

/** V8's collector, where the tests run with `--v8-flags=--expose-gc` (deno.json's test task). */
const collectGarbage = (globalThis as { gc?: () => void }).gc;

Deno.test({
  name:
    "a reload lets go of the rule set it replaced at once (reload storms do not pile up memory)",
  ignore: collectGarbage === undefined,
  async fn() {
    const rules = (name: string) => passRule({ name, listen: "127.0.0.1:0", target: 9 });
    await using bouncer = await startDaemon(rules("a"));
    await bouncer.reload(rules("b"));
    const replaced = new WeakRef(bouncer.daemon.config);
    // Changed files: an unchanged one keeps its rule set.
    await bouncer.reload(rules("c"));
    await bouncer.reload(rules("d"));
    // Before the fix, the reload's read timeout (5 s) kept each loaded rule set alive.
    collectGarbage!();
    assertEquals(replaced.deref(), undefined, "the replaced rule set is still referenced");
  },
});

Deno.test("the last reload's result reaches /status.json and /metrics: refused, partly applied, applied", async () => {
  const good = `[server]\nstatus = "127.0.0.1:0"\n` +
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:9"\n`;
  await using bouncer = await startDaemon(good);
  const base = `http://${bouncer.daemon.status.address}`;
  const lastReload = async () =>
    (await fetch(`${base}/status.json`).then((r) => r.json())).last_reload;
  const success = async () =>
    (await fetch(`${base}/metrics`).then((r) => r.text())).match(
      /^portbounce_last_reload_success (\d)$/m,
    )?.[1];
  assertEquals(await lastReload(), null);
  assertEquals(await success(), "1");
  await bouncer.reload(good + "[[rule]]\nname = 7\n");
  const refused = await lastReload();
  assertEquals(refused.result, "refused");
  assertMatch(refused.summary, /^\d problems? in .*rules\.toml$/);
  assert(refused.problems.length > 0);
  assertEquals(await success(), "0");
  // A listener on a port another program holds: the rest applies.
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await bouncer.reload(
      good +
        `[[rule]]\nname = "held"\nlisten = "127.0.0.1:${held.addr.port}"\nbounce_to = "127.0.0.1:9"\n`,
    );
  } finally {
    held.close();
  }
  const partly = await lastReload();
  assertEquals(partly.result, "partly applied");
  assertMatch(partly.problems[0], /^cannot bind tcp 127\.0\.0\.1:\d+: address already in use/);
  assertEquals(await success(), "0");
  await bouncer.reload(good);
  const applied = await lastReload();
  assertEquals(applied.result, "applied");
  assertMatch(applied.summary, /^listeners: /);
  assertEquals(await success(), "1");
  // Moving the status endpoint to a port another program holds: the old one serves on and says so.
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await bouncer.reload(
      good.replace('status = "127.0.0.1:0"', `status = "127.0.0.1:${taken.addr.port}"`),
    );
    assertEquals(bouncer.daemon.status.address, base.slice("http://".length));
    const kept = await lastReload();
    assertEquals(kept.result, "partly applied");
    assertMatch(kept.problems[0], /^cannot bind the status endpoint: address already in use/);
    assertEquals(await success(), "0");
  } finally {
    taken.close();
  }
});

function udpPortIsFree(port: number): boolean {
  try {
    Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("a worker's session revoked but not yet ended drains when the next reload removes its listener", async () => {
  const plan = (text: string) => {
    const config = loadRules(text);
    return { rules: config.rules, plan: buildPlan(config, new Map()).listeners };
  };
  const rule = (extra: string, listen = "127.0.0.1:0") =>
    passRule({ name: "r", listen, target: 9, extra });
  const first = plan(rule(""));
  const bound = Engine.bind(first.rules, first.plan, getLogger(["portbounce", "test"]));
  if (!bound.ok) throw new Error("not bound");
  const engine = bound.engine;
  try {
    // A worker's session: closing it only asks the worker, so it stays tracked until it ends.
    engine.openRemote(
      {
        setup: {
          protocol: "tcp",
          listenerKey: first.plan[0].key,
          client: "127.0.0.1:5000",
          clientIp: "127.0.0.1",
          listen: "127.0.0.1:1",
          target: "127.0.0.1:9",
        },
        rule: first.rules[0] as PassRule,
        admission: { release() {} },
      },
      { close() {} },
      Date.now(),
      0,
    );
    const refused = plan(rule('from = "10.0.0.0/8"'));
    const revoking = await engine.reload(refused.rules, refused.plan, {
      drainMs: 0,
      enforce: true,
    });
    assertEquals([revoking.draining, revoking.revoked], [0, 1]);
    const moved = plan(rule("", "127.0.0.2:0"));
    const removing = await engine.reload(moved.rules, moved.plan, { drainMs: 0, enforce: true });
    assertEquals([removing.draining, removing.revoked], [1, 0], "drained, not revoked twice");
  } finally {
    await engine.stopAccepting();
    engine.targets.stop();
    engine.monitor.stop();
  }
});
