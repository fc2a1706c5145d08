/**
 * Several targets in-process: failover, health (passive and active),
 * balance modes, and bandwidth lower bounds. Checked where sessions land.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { startDaemon } from "../harness.ts";
import {
  echo,
  exchange,
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

/** A server that answers every connection with its name. */
function named(name: string, port = 0) {
  const server = tcpServer(
    async (conn) => {
      await readAll(conn);
      await writeAll(conn, new TextEncoder().encode(name));
    },
    "127.0.0.1",
    port,
  );
  return {
    port: server.port,
    served: () => server.clients.length,
    [Symbol.asyncDispose]: () => server[Symbol.asyncDispose](),
  };
}

function rule(targets: number[], extra = ""): string {
  return `[[rule]]\nname = "r"\nlisten = "127.0.0.1:0"\nbounce_to = [${
    targets.map((p) => `"127.0.0.1:${p}"`).join(", ")
  }]\n${extra}\n`;
}

Deno.test("failover: a dead first target is skipped, logged per attempt, then marked down", async () => {
  const dead = freePortRange(1);
  await using b = named("b");
  await using bouncer = await startDaemon(rule([dead, b.port]));
  for (let i = 0; i < 5; i++) assertEquals(await exchange(bouncer.port(), "?"), "b");
  // Logged once (more are held back by the rate limit), counted on the target three times:
  // three failed connects mark it down, and it rests while the next sessions go to b.
  const attempts = bouncer.log.filter({ event: "error", target: `127.0.0.1:${dead}` });
  assertEquals(attempts.length, 1);
  assertMatch(attempts[0].error as string, /^connection refused; trying the next target$/);
  await bouncer.log.waitFor({ message: new RegExp(`^target 127\\.0\\.0\\.1:${dead} is down`) });
  assertEquals(bouncer.daemon.engine.stats.ofTarget("r", `127.0.0.1:${dead}`).errors, 3);
  const report = bouncer.daemon.engine.targets.states().get(`127.0.0.1:${dead}`)!;
  assertEquals([report.up, report.lastError], [false, "connection refused"]);
  assertEquals(bouncer.log.filter({ event: "disconnect", reason: "error" }), []);
});

Deno.test("every target failing gives one error listing them all", async () => {
  const [x, y] = [freePortRange(1), freePortRange(1)];
  await using bouncer = await startDaemon(rule([x, y]));
  assertEquals(await exchange(bouncer.port(), "?"), "");
  const error = await bouncer.log.waitFor({ event: "error", error: /^all 2 targets/ });
  assertEquals(
    error.error,
    `all 2 targets failed: 127.0.0.1:${x}: connection refused; 127.0.0.1:${y}: connection refused`,
  );
});

Deno.test("a target that dies is left for the next; an active check brings it back when it returns", async () => {
  const aPort = freePortRange(1);
  let a = named("a", aPort);
  await using b = named("b");
  await using bouncer = await startDaemon(
    rule(
      [aPort, b.port],
      'health_check = { interval = "200ms", timeout = "100ms", rise = 1, fall = 1 }',
    ),
  );
  assertEquals(await exchange(bouncer.port(), "?"), "a");
  await a[Symbol.asyncDispose](); // a dies mid-test.
  assertEquals(await exchange(bouncer.port(), "?"), "b");
  await bouncer.log.waitFor({ message: new RegExp(`^target 127\\.0\\.0\\.1:${aPort} is down`) });
  for (let i = 0; i < 3; i++) assertEquals(await exchange(bouncer.port(), "?"), "b");
  a = named("a", aPort); // ...and comes back.
  await using _a = a;
  await bouncer.log.waitFor({
    message: new RegExp(`^target 127\\.0\\.0\\.1:${aPort} is up again`),
  });
  assertEquals(await exchange(bouncer.port(), "?"), "a");
});

Deno.test("round-robin spreads sessions evenly; least-sessions avoids the busy target", async () => {
  await using a = named("a");
  await using b = named("b");
  await using c = named("c");
  {
    await using bouncer = await startDaemon(
      rule([a.port, b.port, c.port], 'balance = "round-robin"'),
    );
    const got: string[] = [];
    for (let i = 0; i < 30; i++) got.push(await exchange(bouncer.port(), "?"));
    assertEquals(["a", "b", "c"].map((n) => got.filter((g) => g === n).length), [10, 10, 10]);
  }
  await using held = tcpServer(echo);
  await using busy = named("busy");
  await using bouncer = await startDaemon(
    rule([held.port, busy.port], 'balance = "least-sessions"'),
  );
  const open = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() }); // To the echo.
  await writeAll(open, new Uint8Array([1]));
  await open.read(new Uint8Array(1));
  for (let i = 0; i < 3; i++) assertEquals(await exchange(bouncer.port(), "?"), "busy");
  open.close();
});

Deno.test("source-hash: each client address keeps its target", async () => {
  await using a = named("a");
  await using b = named("b");
  await using bouncer = await startDaemon(rule([a.port, b.port], 'balance = "source-hash"'));
  const seen = new Map<string, Set<string>>();
  for (let round = 0; round < 4; round++) {
    for (const client of ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]) {
      const { data } = await exchangeFrom(client, bouncer.port(), "?");
      seen.set(client, (seen.get(client) ?? new Set()).add(data));
    }
  }
  for (const [client, targets] of seen) assertEquals(targets.size, 1, `${client}: ${[...targets]}`);
  const used = new Set([...seen.values()].flatMap((s) => [...s]));
  assertEquals(used, new Set(["a", "b"]), "both targets serve somebody");
});

Deno.test("UDP with source-hash: a client's flows all go to one target", async () => {
  await using a = udpEcho();
  await using b = udpEcho();
  await using bouncer = await startDaemon(
    `[[rule]]\nname = "u"\nprotocol = "udp"\nlisten = "127.0.0.1:0"\nbounce_to = ["127.0.0.1:${a.port}", "127.0.0.1:${b.port}"]\nbalance = "source-hash"\n`,
  );
  const targets = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const client = udpSocket();
    await client.send(new Uint8Array([i]), {
      transport: "udp",
      hostname: "127.0.0.1",
      port: bouncer.port(),
    });
    assert(await receiveWithin(client, 1_000));
    client.close();
  }
  for (const entry of bouncer.log.filter({ event: "connect" })) targets.add(entry.target as string);
  assertEquals(targets.size, 1, "every flow from 127.0.0.1 went to the same target");
});

Deno.test("bandwidth: a transfer takes at least its size over the rate, each direction", async () => {
  await using target = tcpServer(echo);
  const rate = 200 * 1024;
  await using bouncer = await startDaemon(
    `[[rule]]\nname = "slow"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\nbandwidth = "200KiB/s"\n`,
  );
  const size = 400 * 1024;
  const started = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  const [, got] = await Promise.all([
    writeAll(conn, new Uint8Array(size)).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  conn.close();
  const seconds = (performance.now() - started) / 1000;
  assertEquals(got.length, size);
  // Up and down each wait their turn (both at once: the echo streams back while we send);
  // a tenth of a second of burst passes at once.
  assert(seconds >= size / rate - 0.1 - 0.05, `400 KiB at 200 KiB/s took ${seconds.toFixed(2)} s`);
});

Deno.test("bandwidth: UDP datagrams over the budget are dropped and counted", async () => {
  await using target = udpEcho();
  await using bouncer = await startDaemon(
    `[[rule]]\nname = "u"\nprotocol = "udp"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\nbandwidth = "10KiB/s"\n`,
  );
  const client = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: bouncer.port() };
    for (let i = 0; i < 20; i++) await client.send(new Uint8Array(1_000), to);
    const dropped = () => bouncer.daemon.engine.stats.rules.get("u")?.dropped.bandwidth ?? 0;
    await waitUntil(() => dropped() >= 15, "15 of 20 KB-sized datagrams dropped at 10 KiB/s", {
      state: dropped,
    });
  } finally {
    client.close();
  }
});
