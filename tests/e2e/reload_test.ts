/**
 * SIGHUP reload end to end: kept listeners never refuse, sessions keep their
 * rule, removed listeners drain, bad files change nothing.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import {
  delay,
  echo,
  exchange,
  portIsFree,
  readAll,
  startBouncer,
  startPortbounce,
  tcpServer,
  waitUntil,
  writeAll,
} from "./helpers.ts";
import { freePortRange, udpEcho } from "./helpers.ts";

/** Rewrites the bouncer's rule file and sends SIGHUP; waits for the reload's outcome line. */
async function reload(
  bouncer: Awaited<ReturnType<typeof startBouncer>>,
  rules: string,
  count: number,
): Promise<string> {
  await Deno.writeTextFile(`${bouncer.dir}/rules.toml`, rules);
  bouncer.signal("SIGHUP");
  const outcome = await bouncer.log.waitFor(
    { message: /^(reload: listeners|reload failed)/ },
    10_000,
    count,
  );
  return outcome.message!;
}

function tagged(tag: string) {
  return tcpServer(async (conn) => {
    const request = await readAll(conn);
    await writeAll(conn, new TextEncoder().encode(`${tag}:${new TextDecoder().decode(request)}`));
  });
}

Deno.test("20 reloads under continuous load: kept listeners never refuse, live sessions survive", async () => {
  await using target = tcpServer(echo);
  const [kept, churn] = [freePortRange(1), freePortRange(1)];
  const keptRule =
    `[[rule]]\nname = "kept"\nlisten = "127.0.0.1:${kept}"\nbounce_to = "127.0.0.1:${target.port}"\nlog = ["error"]\n`;
  await using udpTarget = udpEcho();
  const udpPort = udpTarget.port;
  const udpListen = freePortRange(1);
  const udpRule =
    `[[rule]]\nname = "udp-kept"\nprotocol = "udp"\nlisten = "127.0.0.1:${udpListen}"\nbounce_to = "127.0.0.1:${udpPort}"\n`;
  await using bouncer = await startBouncer(
    `[server]\ndrain_timeout = "300ms"\n${keptRule}${udpRule}`,
  );

  // A session opened before the reloads, used after them.
  const longLived = await Deno.connect({ hostname: "127.0.0.1", port: kept });
  await writeAll(longLived, new TextEncoder().encode("start;"));
  // A UDP flow throughout.
  const udpClient = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let udpSent = 0;
  let udpReceived = 0;
  let running = true;
  const udpFlow = (async () => {
    const buffer = new Uint8Array(2048);
    while (running) {
      await udpClient.send(new Uint8Array(64), {
        transport: "udp",
        hostname: "127.0.0.1",
        port: udpListen,
      });
      udpSent++;
      const got = await Promise.race([
        udpClient.receive(buffer).then(() => true),
        delay(500).then(() => false),
      ]);
      if (got) udpReceived++;
      await delay(5);
    }
  })();
  // New connections every few ms.
  let attempts = 0;
  const failures: string[] = [];
  const load = (async () => {
    while (running) {
      attempts++;
      try {
        const reply = await exchange(kept, `n${attempts}`);
        if (reply !== `n${attempts}`) failures.push(`wrong reply ${reply}`);
      } catch (error) {
        failures.push((error as Error).message);
      }
      await delay(3);
    }
  })();

  for (let i = 1; i <= 20; i++) {
    // Alternate: add a churn listener, change the kept rule's log, remove the churn listener.
    const churnRule = i % 2 === 1
      ? `[[rule]]\nname = "churn"\nlisten = "127.0.0.1:${churn}"\nbounce_to = "127.0.0.1:${target.port}"\n`
      : "";
    const changed = i % 3 === 0
      ? keptRule.replace('log = ["error"]', 'log = ["error", "block"]')
      : keptRule;
    const outcome = await reload(
      bouncer,
      `[server]\ndrain_timeout = "300ms"\n${changed}${udpRule}${churnRule}`,
      i,
    );
    assertMatch(outcome, /reload: listeners: \d+ added.*, 2 kept/);
    if (i % 2 === 1) assertEquals(await exchange(churn, "churn"), "churn");
    await delay(80);
  }
  running = false;
  await Promise.all([load, udpFlow]);

  // The long-lived session is still the same connection.
  await writeAll(longLived, new TextEncoder().encode("end"));
  await longLived.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(longLived)), "start;end");
  longLived.close();
  udpClient.close();

  console.log(
    `    20 reloads: ${attempts} connections to the kept listener, ${failures.length} failed; UDP ${udpReceived}/${udpSent} echoed`,
  );
  assertEquals(failures, []);
  assert(attempts > 100, `only ${attempts} connections were tried`);
  // One UDP session the whole time: it was never cut by a reload.
  assertEquals(bouncer.log.filter({ event: "connect", rule: "udp-kept" }).length, 1);
  assertEquals(bouncer.log.filter({ event: "disconnect", protocol: "udp" }), []);
});

Deno.test("a removed listener stops accepting; its live session drains, then closes as drained", async () => {
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  const head = `[server]\nreload_drain_timeout = "700ms"\n` +
    `[[rule]]\nname = "staying"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\n`;
  const rules = head +
    `[[rule]]\nname = "leaving"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
  await using bouncer = await startBouncer(rules);
  const live = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(live, new TextEncoder().encode("a"));
  await bouncer.log.waitFor({ event: "connect" });
  const started = performance.now();
  const outcome = await reload(bouncer, head, 1);
  assertMatch(
    outcome,
    new RegExp(
      `1 removed \\(tcp 127\\.0\\.0\\.1:${port}\\); rules: 0 added, 0 changed, 1 removed \\(leaving\\), 1 unchanged; sessions: 1 draining \\(up to 700ms\\), 0 revoked`,
    ),
  );
  assert(portIsFree(port), "the removed listener's port is released at once");
  // Still relaying during the drain...
  await writeAll(live, new TextEncoder().encode("b"));
  // ...then closed when reload_drain_timeout passes.
  const got = await readAll(live);
  const waited = performance.now() - started;
  live.close();
  assertEquals(new TextDecoder().decode(got), "ab");
  assert(waited >= 600, `closed after ${waited} ms, before reload_drain_timeout`);
  await bouncer.log.waitFor({ event: "disconnect", rule: "leaving", reason: "drained" });
});

Deno.test("a changed rule applies to new sessions; a live session keeps its old target", async () => {
  await using oldTarget = tagged("old");
  await using newTarget = tagged("new");
  const port = freePortRange(1);
  const rule = (target: number) =>
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target}"\n`;
  await using bouncer = await startBouncer(rule(oldTarget.port));
  const live = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(live, new TextEncoder().encode("live"));
  await bouncer.log.waitFor({ event: "connect" });
  assertMatch(
    await reload(bouncer, rule(newTarget.port), 1),
    /0 added, 1 kept, 0 removed; rules: 0 added, 1 changed \(web\)/,
  );
  assertEquals(await exchange(port, "fresh"), "new:fresh");
  await live.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(live)), "old:live");
  live.close();
});

Deno.test("an invalid reload logs every problem and keeps the old rules running", async () => {
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  const good =
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
  await using bouncer = await startBouncer(good);
  const outcome = await reload(
    bouncer,
    good + `[[rule]]\nname = "bad"\nlisten = "127.0.0.1:99999"\nbounce_to = "nowhere"\nfrm = "x"\n`,
    1,
  );
  assertMatch(
    outcome,
    /reload failed: 2 problems in .*rules\.toml; the running rules are unchanged/,
  );
  await bouncer.log.waitFor({
    level: "error",
    message:
      /^reload: .*rules\.toml:\d+: rule "bad" \(rule #2\): frm: unknown key; did you mean "from"\?/,
  });
  await bouncer.log.waitFor({ level: "error", message: /^reload: .*port 99999 is out of range/ });
  assertEquals(await exchange(port, "still here"), "still here");
  // A later good reload applies normally.
  assertMatch(await reload(bouncer, good, 2), /reload: listeners: 0 added, 1 kept/);
});

Deno.test("a listener that cannot be bound on reload is reported; the rest applies", async () => {
  await using target = tcpServer(echo);
  const [port, taken, added] = [freePortRange(1), freePortRange(1), freePortRange(1)];
  let holder: Deno.Listener | undefined = Deno.listen({ hostname: "127.0.0.1", port: taken });
  try {
    const base =
      `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
    await using bouncer = await startBouncer(base);
    const outcome = await reload(
      bouncer,
      base +
        `[[rule]]\nname = "more"\nlisten = ["127.0.0.1:${taken}", "127.0.0.1:${added}"]\nbounce_to = "127.0.0.1:${target.port}"\n`,
      1,
    );
    assertMatch(
      outcome,
      new RegExp(
        `1 added \\(tcp 127\\.0\\.0\\.1:${added}\\), 1 kept, 0 removed, 1 failed to bind \\(tcp 127\\.0\\.0\\.1:${taken}\\)`,
      ),
    );
    await bouncer.log.waitFor({
      message: new RegExp(
        `^reload: cannot bind tcp 127\\.0\\.0\\.1:${taken}: address already in use`,
      ),
    });
    assertEquals(await exchange(added, "new"), "new");
    assertEquals(await exchange(port, "old"), "old");
    // Once the port is free, a reload of the same file binds what failed.
    holder.close();
    holder = undefined;
    bouncer.signal("SIGHUP");
    assertMatch(
      (await bouncer.log.waitFor({ message: /^reload: listeners/ }, 10_000, 2)).message!,
      /^reload: listeners: 1 added \(tcp 127\.0\.0\.1:\d+\), 2 kept, 0 removed; rules: 0 added, 0 changed, 0 removed, 2 unchanged;/,
    );
    assertEquals(await exchange(taken, "freed"), "freed");
    // Then, with everything bound, the same file again changes nothing and redoes nothing.
    bouncer.signal("SIGHUP");
    assertMatch(
      (await bouncer.log.waitFor({ message: /^reload: listeners/ }, 10_000, 3)).message!,
      /3 kept, 0 removed; rules: 0 added, 0 changed, 0 removed, 2 unchanged; .* \(the rule file is unchanged: nothing to redo\)$/,
    );
    assertEquals(await exchange(taken, "still"), "still");
  } finally {
    holder?.close();
  }
});

const root = Deno.uid() === 0;
Deno.test({
  name:
    "a listener moving from 127.0.0.1:P to 0.0.0.0:P binds once the old socket is gone (network namespace)",
  ignore: !root,
  async fn() {
    // 0.0.0.0 is only safe to bind in a namespace of the test's own, which has nothing but lo.
    const ns = `pbmove${Deno.pid % 10000}`;
    const ip = (...args: string[]) => new Deno.Command("ip", { args, stderr: "null" }).output();
    await ip("netns", "add", ns);
    try {
      await ip("netns", "exec", ns, "ip", "link", "set", "lo", "up");
      const dir = await Deno.makeTempDir({ prefix: "portbounce-e2e-" });
      const port = 18_080;
      const rule = (address: string) =>
        `[[rule]]\nname = "web"\nlisten = "${address}:${port}"\nbounce_to = "127.0.0.1:9"\n`;
      await Deno.writeTextFile(`${dir}/rules.toml`, rule("127.0.0.1"));
      await using bouncer = await startPortbounce(
        ["run", "-c", `${dir}/rules.toml`],
        dir,
        ["ip", "netns", "exec", ns],
      );
      // Back and forth: each move frees the port only once the old accept is cancelled.
      for (let i = 1; i <= 6; i++) {
        const [from, to] = i % 2 === 1 ? ["127.0.0.1", "0.0.0.0"] : ["0.0.0.0", "127.0.0.1"];
        assertMatch(
          await reload(bouncer, rule(to), i),
          new RegExp(
            `^reload: listeners: 1 added \\(tcp ${
              to.replaceAll(".", "\\.")
            }:${port}\\), 0 kept, 1 removed \\(tcp ${from.replaceAll(".", "\\.")}:${port}\\)`,
          ),
        );
      }
      assertEquals(bouncer.log.filter({ message: /cannot bind/ }), []);
    } finally {
      await ip("netns", "del", ns);
    }
  },
});

Deno.test("after a reload, /metrics and SIGUSR2 show the rules in force, not removed ones", async () => {
  await using target = tcpServer(echo);
  const [keepPort, oldPort, freshPort] = [freePortRange(1), freePortRange(1), freePortRange(1)];
  const head = `[server]\nstatus = "127.0.0.1:0"\n`;
  const keep =
    `[[rule]]\nname = "keep"\nlisten = "127.0.0.1:${keepPort}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
  const old =
    `[[rule]]\nname = "old"\nlisten = "127.0.0.1:${oldPort}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
  const fresh =
    `[[rule]]\nname = "fresh"\naction = "block"\nlisten = "127.0.0.1:${freshPort}"\nfrom = "127.0.0.9"\n`;
  await using bouncer = await startBouncer(head + keep + old);
  assertEquals(await exchange(oldPort, "x"), "x");
  await bouncer.log.waitFor({ event: "disconnect", rule: "old" });
  const metrics = () => fetch(`http://${bouncer.ready.status}/metrics`).then((r) => r.text());
  assertMatch(await metrics(), /portbounce_sessions_total\{rule="old"/);
  await reload(bouncer, head + keep + fresh, 1);
  // Renderings are reused for 250 ms: the next one leaves the removed rule out.
  const oldLines = async () =>
    (await metrics()).split("\n").filter((l) => l.includes(`rule="old"`));
  await waitUntil(
    async () => (await oldLines()).length === 0,
    "a removed rule gone from /metrics",
    {
      timeoutMs: 1_000,
      everyMs: 50,
      state: oldLines,
    },
  );
  bouncer.signal("SIGUSR2");
  await bouncer.log.waitFor({ kind: "rule", name: "fresh", total: 0 });
  await bouncer.log.waitFor({ kind: "rule", name: "keep" });
  assertEquals(bouncer.log.filter({ kind: "rule", name: "old" }), []);
});
