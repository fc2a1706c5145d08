/**
 * The TCP relay end to end: the real CLI as a subprocess, real sockets on
 * loopback (127.0.0.0/8 and ::1), data checked by SHA-256.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import {
  delay,
  echo,
  exchangeFrom,
  freePortRange,
  hashUntilEof,
  randomBytes,
  readAll,
  sha256,
  startBouncer,
  tcpServer,
  writeAll,
} from "./helpers.ts";
import { passRule } from "../fixtures/rules.ts";

function rule(listen: string, target: string, extra = ""): string {
  return passRule({ listen, target, extra });
}

/**
 * Sends `upload` through the bouncer while the target sends `download` back,
 * both at once; returns the hashes each side received and the time taken.
 */
async function bidirectional(
  hostname: string,
  port: number,
  upload: Uint8Array,
  targetReceived: Promise<{ sha256: string; bytes: number }>,
) {
  const started = performance.now();
  const conn = await Deno.connect({ hostname, port });
  const sending = writeAll(conn, upload).then(() => conn.closeWrite());
  const receiving = hashUntilEof(conn);
  const [, clientGot, targetGot] = await Promise.all([sending, receiving, targetReceived]);
  conn.close();
  return { clientGot, targetGot, seconds: (performance.now() - started) / 1000 };
}

/** A target that hashes what it receives while it sends `download`, then half-closes. */
function exchangingTarget(download: Uint8Array, hostname: string) {
  const received = Promise.withResolvers<{ sha256: string; bytes: number }>();
  const target = tcpServer(async (conn) => {
    const hashing = hashUntilEof(conn);
    await writeAll(conn, download);
    await conn.closeWrite();
    received.resolve(await hashing);
  }, hostname);
  return { target, received: received.promise };
}

Deno.test("64 MiB each way at once arrive intact (SHA-256), IPv4", async () => {
  const size = 64 * 1024 * 1024;
  const upload = randomBytes(size);
  const download = randomBytes(size);
  const { target, received } = exchangingTarget(download, "127.0.0.1");
  await using _target = target;
  await using bouncer = await startBouncer(rule("127.0.0.1:0", `127.0.0.1:${target.port}`));
  const result = await bidirectional("127.0.0.1", bouncer.port(), upload, received);
  assertEquals(result.targetGot, { sha256: sha256(upload), bytes: size });
  assertEquals(result.clientGot, { sha256: sha256(download), bytes: size });
  const mibPerSecond = (2 * size) / (1024 * 1024) / result.seconds;
  console.log(
    `    64 MiB each way in ${result.seconds.toFixed(2)} s: ${
      mibPerSecond.toFixed(0)
    } MiB/s total (${(mibPerSecond * 8 * 1.048576 / 1000).toFixed(2)} Gbit/s)`,
  );
  const ended = await bouncer.log.waitFor({ event: "disconnect" });
  assertEquals([ended.bytes_up, ended.bytes_down], [size, size]);
});

Deno.test("IPv6 clients and targets on ::1, 8 MiB each way intact", async () => {
  const size = 8 * 1024 * 1024;
  const upload = randomBytes(size);
  const download = randomBytes(size);
  const { target, received } = exchangingTarget(download, "::1");
  await using _target = target;
  await using bouncer = await startBouncer(rule("[::1]:0", `[::1]:${target.port}`));
  const result = await bidirectional("::1", bouncer.port(), upload, received);
  assertEquals(result.targetGot.sha256, sha256(upload));
  assertEquals(result.clientGot.sha256, sha256(download));
  const connect = await bouncer.log.waitFor({ event: "connect" });
  for (const field of ["client", "listen", "target", "local"]) {
    assertMatch(connect[field] as string, /^\[::1\]:\d+$/);
  }
});

Deno.test("half-close: a client that shuts its sending side still gets the whole reply", async () => {
  const reply = randomBytes(3 * 1024 * 1024);
  await using target = tcpServer(async (conn) => {
    // Reply only after the client's EOF, like a request/response over shutdown(SHUT_WR).
    const request = await readAll(conn);
    await writeAll(conn, request);
    await writeAll(conn, reply);
    await conn.closeWrite();
  });
  await using bouncer = await startBouncer(rule("127.0.0.1:0", `127.0.0.1:${target.port}`));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await writeAll(conn, new TextEncoder().encode("request"));
  await conn.closeWrite();
  const got = await readAll(conn);
  conn.close();
  assertEquals(new TextDecoder().decode(got.subarray(0, 7)), "request");
  assertEquals(sha256(got.subarray(7)), sha256(reply));
  await bouncer.log.waitFor({ event: "disconnect", reason: "client-closed" });
});

Deno.test("target closes first: reason target-closed, client sees EOF", async () => {
  await using target = tcpServer(async (conn) => {
    await writeAll(conn, new TextEncoder().encode("bye"));
  });
  await using bouncer = await startBouncer(rule("127.0.0.1:0", `127.0.0.1:${target.port}`));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  assertEquals(new TextDecoder().decode(await readAll(conn)), "bye");
  conn.close();
  await bouncer.log.waitFor({
    event: "disconnect",
    bytes_up: 0,
    bytes_down: 3,
    reason: "target-closed",
  });
});

Deno.test("1,000 concurrent connections are all relayed correctly", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    rule("127.0.0.1:0", `127.0.0.1:${target.port}`, 'log = ["error"]'),
  );
  const count = 1_000;
  const conns = await Promise.all(
    Array.from(
      { length: count },
      () => Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() }),
    ),
  );
  // Every connection is open at once before any data moves.
  const results = await Promise.all(conns.map(async (conn, i) => {
    const payload = randomBytes(1024 + i);
    await writeAll(conn, payload);
    await conn.closeWrite();
    const got = await readAll(conn);
    conn.close();
    return sha256(got) === sha256(payload);
  }));
  assertEquals(results.filter((ok) => ok).length, count);
  assertEquals(bouncer.log.filter({ event: "error" }), []);
});

Deno.test("first match decides pass or block by client source address; deny by default", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(`
[[rule]]
name = "lab-blocked"
action = "block"
listen = "127.0.0.1:0"
from = "127.0.0.2/32"

[[rule]]
name = "office"
listen = "127.0.0.1:0"
from = ["127.0.0.0/29"]
bounce_to = "127.0.0.1:${target.port}"
`);
  // Both rules name 127.0.0.1:0, so they share one listener.
  assertEquals(bouncer.ready.listeners.length, 1);
  const port = bouncer.port();

  const passed = await exchangeFrom("127.0.0.3", port, "from .3");
  assertEquals(passed.data, "from .3");
  const blocked = await exchangeFrom("127.0.0.2", port, "from .2");
  assertEquals(blocked.data, "");
  const unmatched = await exchangeFrom("127.0.0.9", port, "from .9");
  assertEquals(unmatched.data, "");

  // Checked at the target, not only in the log: only .3 ever reached it.
  assertEquals(target.clients, ["127.0.0.1"]);
  await bouncer.log.waitFor({
    event: "block",
    rule: "lab-blocked",
    client: /^127\.0\.0\.2:\d+$/,
    listen: `127.0.0.1:${port}`,
    reason: "rule",
  });
  await bouncer.log.waitFor({
    event: "block",
    rule: null,
    client: /^127\.0\.0\.9:\d+$/,
    reason: "no-matching-rule",
  });
  await bouncer.log.waitFor({ event: "connect", rule: "office", client: /^127\.0\.0\.3:\d+$/ });
});

Deno.test("port ranges map listen port N to the N-th target port", async () => {
  const targets = [tcpServer(async (c) => await writeAll(c, new TextEncoder().encode("A")))];
  await using _a = targets[0];
  // Targets on a fixed range, so the mapping is visible.
  const base = freePortRange(6);
  const listenBase = base;
  const targetBase = base + 3;
  const servers = [0, 1, 2].map((i) => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: targetBase + i });
    (async () => {
      for await (const conn of listener) {
        await writeAll(conn, new TextEncoder().encode(`target ${i}`)).catch(() => {});
        conn.close();
      }
    })().catch(() => {});
    return listener;
  });
  try {
    await using bouncer = await startBouncer(
      rule(
        `127.0.0.1:${listenBase}-${listenBase + 2}`,
        `127.0.0.1:${targetBase}-${targetBase + 2}`,
      ),
    );
    assertEquals(bouncer.ready.listeners.map((l) => l.port), [
      listenBase,
      listenBase + 1,
      listenBase + 2,
    ]);
    for (const i of [0, 1, 2]) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: listenBase + i });
      assertEquals(new TextDecoder().decode(await readAll(conn)), `target ${i}`);
      conn.close();
    }
  } finally {
    for (const server of servers) server.close();
  }
});

Deno.test("target down: the client is closed and the error names the cause", async () => {
  const [closedPort] = [freePortRange(1)];
  await using bouncer = await startBouncer(rule("127.0.0.1:0", `127.0.0.1:${closedPort}`));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  assertEquals((await readAll(conn)).length, 0);
  conn.close();
  await bouncer.log.waitFor({
    level: "warning",
    event: "error",
    rule: "r",
    target: `127.0.0.1:${closedPort}`,
    error: "connection refused",
  });
});

Deno.test("connect timeout: a target whose accept queue is full", async () => {
  // A listener that never accepts: once its backlog is full, SYNs go unanswered.
  const blackhole = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fillers: Deno.Conn[] = [];
  try {
    for (;;) {
      try {
        fillers.push(
          await Deno.connect({
            hostname: "127.0.0.1",
            port: blackhole.addr.port,
            signal: AbortSignal.timeout(300),
          }),
        );
      } catch {
        break; // The queue is full.
      }
    }
    await using bouncer = await startBouncer(
      rule("127.0.0.1:0", `127.0.0.1:${blackhole.addr.port}`, 'connect_timeout = "500ms"'),
    );
    const started = performance.now();
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
    assertEquals((await readAll(conn)).length, 0);
    conn.close();
    const waited = performance.now() - started;
    assert(waited >= 450, `closed after ${waited} ms, before the connect timeout`);
    await bouncer.log.waitFor({ event: "error", error: "connect timeout after 500ms" });
  } finally {
    for (const conn of fillers) conn.close();
    blackhole.close();
  }
});

Deno.test("idle timeout closes a quiet session; traffic keeps it alive", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    rule("127.0.0.1:0", `127.0.0.1:${target.port}`, 'idle_timeout = "600ms"'),
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  const byte = new Uint8Array(1);
  // Active for longer than the limit: each exchange resets the clock.
  for (let i = 0; i < 6; i++) {
    await writeAll(conn, byte);
    assertEquals(await conn.read(new Uint8Array(1)), 1);
    await delay(200);
  }
  assertEquals(bouncer.log.filter({ event: "disconnect" }), []);
  // Then quiet: closed by the bouncer.
  assertEquals(await conn.read(new Uint8Array(1)), null);
  conn.close();
  await bouncer.log.waitFor({
    event: "disconnect",
    bytes_up: 6,
    bytes_down: 6,
    reason: "idle-timeout",
  });
});

Deno.test("max_sessions refuses the session over the limit with a block naming it", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    rule("127.0.0.1:0", `127.0.0.1:${target.port}`, "max_sessions = 1"),
  );
  const first = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await bouncer.log.waitFor({ event: "connect" });
  const second = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  assertEquals(await second.read(new Uint8Array(1)), null);
  second.close();
  await bouncer.log.waitFor({ event: "block", rule: "r", reason: "max_sessions" });
  first.close();
});

Deno.test("JSON logs carry every field named", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    rule("127.0.0.1:0", `127.0.0.1:${target.port}`),
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await writeAll(conn, new TextEncoder().encode("12345"));
  await conn.closeWrite();
  await readAll(conn);
  conn.close();
  const line = await bouncer.log.waitFor({ event: "disconnect" });
  assertEquals(line.level, "info");
  assertEquals(line.rule, "r");
  assertEquals(line.action, "pass");
  assertEquals(line.protocol, "tcp");
  assertEquals(line.bytes_up, 5);
  assertEquals(line.bytes_down, 5);
  assertEquals(line.reason, "client-closed");
  assertEquals(line.target, `127.0.0.1:${target.port}`);
  assertEquals(line.listen, `127.0.0.1:${bouncer.port()}`);
  assertMatch(line.client as string, /^127\.0\.0\.1:\d+$/);
  assert(typeof line.duration_ms === "number" && typeof line.time === "string");
});

Deno.test("the first session after a quiet start longer than idle_timeout is relayed (the clock is current)", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    passRule({ listen: "127.0.0.1:0", target: target.port, extra: 'idle_timeout = "1s"' }),
  );
  await delay(1_500); // DNS switched a while after the start: nothing arrived so far.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  try {
    // A client that takes a moment before it speaks, well within idle_timeout.
    await delay(700);
    await writeAll(conn, new TextEncoder().encode("first"));
    await conn.closeWrite();
    assertEquals(new TextDecoder().decode(await readAll(conn)), "first");
    const ended = await bouncer.log.waitFor({ event: "disconnect" });
    assertEquals(ended.reason, "client-closed");
  } finally {
    conn.close();
  }
});
