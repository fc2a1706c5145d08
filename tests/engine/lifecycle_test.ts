/**
 * Stopping, time and the log in-process: UDP flows do not hold a shutdown,
 * durations beyond setTimeout's range, throttles on a monotonic clock, and
 * rate-limited events a client can cause.
 */
import { assert, assertEquals } from "../assert.ts";
import { passRule } from "../fixtures/rules.ts";
import { startDaemon } from "../harness.ts";
import {
  delay,
  echo,
  readAll,
  receiveWithin,
  tcpServer,
  udpEcho,
  udpSocket,
  writeAll,
} from "../fixtures/net.ts";

Deno.test("stopping: a quiet UDP flow ends after a moment, not after drain_timeout", async () => {
  await using target = udpEcho();
  await using bouncer = await startDaemon(
    `[server]\ndrain_timeout = "30s"\n` +
      passRule({ listen: "127.0.0.1:0", target: target.port, protocol: "udp" }),
    { tuning: { udpDrainGraceMs: 200 } },
  );
  const client = udpSocket();
  try {
    await client.send(new Uint8Array([1]), {
      transport: "udp",
      hostname: "127.0.0.1",
      port: bouncer.port(),
    });
    assert(await receiveWithin(client, 1_000));
    const started = performance.now();
    assertEquals(await bouncer.stop(), 0);
    const waited = performance.now() - started;
    assert(waited < 2_000, `a finished UDP exchange held the shutdown for ${waited} ms`);
    await bouncer.log.waitFor({ event: "disconnect", protocol: "udp", reason: "drained" });
  } finally {
    client.close();
  }
});

Deno.test("durations past 24.8 days do not fire at once: idle, connect and drain timeouts", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startDaemon(
    `[server]\ndrain_timeout = "720h"\n` +
      passRule({
        listen: "127.0.0.1:0",
        target: target.port,
        extra: 'idle_timeout = "720h"\nconnect_timeout = "720h"\nstall_timeout = "720h"',
      }),
    { tuning: { sweepIntervalMs: 20 } },
  );
  const conns = await Promise.all(
    Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() })),
  );
  await bouncer.log.waitFor({ event: "connect" }, 5_000, 20);
  await delay(300);
  const lines = bouncer.log.all().length;
  assertEquals(bouncer.log.filter({ event: "disconnect" }), [], "no session ended by itself");
  // Stopping: the 720 h drain must not cut them after a few milliseconds.
  const stopped = bouncer.daemon.done;
  bouncer.daemon.stop("test");
  await delay(300);
  assertEquals(bouncer.log.filter({ event: "disconnect" }), []);
  assert(bouncer.log.all().length < lines + 5, "idle sessions wrote no stream of lines");
  await writeAll(conns[0], new Uint8Array([7]));
  assertEquals(await conns[0].read(new Uint8Array(1)), 1, "still relaying while draining");
  for (const conn of conns) conn.close();
  assertEquals(await stopped, 0);
});

Deno.test("throttle counts on a monotonic clock: a wall clock stepped back an hour changes nothing", async () => {
  await using target = tcpServer(echo);
  // The monotonic clock moves on a second when the test says so, not by sleeping.
  let ahead = 0;
  await using bouncer = await startDaemon(
    passRule({ listen: "127.0.0.1:0", target: target.port, extra: 'throttle = "5/1s"' }),
    { monotonic: () => performance.now() + ahead },
  );
  const realNow = Date.now;
  Date.now = () => realNow() - 3_600_000;
  try {
    const exchange = async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
      await writeAll(conn, new Uint8Array([1]));
      await conn.closeWrite();
      const got = (await readAll(conn)).length;
      conn.close();
      return got;
    };
    for (let i = 0; i < 5; i++) assertEquals(await exchange(), 1);
    assertEquals(await exchange(), 0, "the sixth in a second is refused");
    ahead += 1_100;
    assertEquals(await exchange(), 1, "a second later sessions are admitted again");
  } finally {
    Date.now = realNow;
  }
});

Deno.test("a block rule with log = [] logs none of a flood of refusals, and counts them all", async () => {
  await using bouncer = await startDaemon(
    `[[rule]]\nname = "closed"\naction = "block"\nlisten = "127.0.0.1:0"\nlog = []\n`,
    { tuning: { eventWindowMs: 400 } },
  );
  for (let i = 0; i < 200; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
    await conn.read(new Uint8Array(1));
    conn.close();
  }
  // The rule logs nothing: log = [] holds for block events too.
  assertEquals(bouncer.log.filter({ event: "block" }), []);
  assertEquals(bouncer.daemon.engine.stats.rules.get("closed")!.blocked, { rule: 200 });
});

Deno.test("refusals by no rule are rate-limited per client and cause, and summed up", async () => {
  await using bouncer = await startDaemon(
    `[[rule]]\nname = "lab-only"\naction = "block"\nlisten = "127.0.0.1:0"\nfrom = "10.0.0.0/8"\n`,
    { tuning: { eventWindowMs: 400 } },
  );
  for (let i = 0; i < 200; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
    await conn.read(new Uint8Array(1));
    conn.close();
  }
  const blocks = bouncer.log.filter({ event: "block", reason: "no-matching-rule" });
  assert(blocks.length >= 1 && blocks.length <= 3, `${blocks.length} block lines for one client`);
  const summary = await bouncer.log.waitFor({
    message: /^suppressed \d+ more tcp blocks of 127\.0\.0\.1/,
  });
  assertEquals(
    blocks.length + bouncer.log.filter({ message: /^suppressed/ }).reduce(
      (sum, entry) => sum + (entry.count as number),
      0,
    ),
    200,
    JSON.stringify(summary),
  );
});
