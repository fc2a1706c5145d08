/**
 * Faults: peers that die or reset mid-stream, running out of file
 * descriptors, a slow reader, and a burst of 20,000 connections. Each test
 * fails when portbounce loses data, leaks, or stops serving.
 */
import net from "node:net";
import { assert, assertEquals, assertMatch } from "../assert.ts";
import {
  delay,
  echo,
  fdCount,
  hashUntilEof,
  randomBytes,
  readAll,
  rssKiB,
  sha256,
  startBouncer,
  startPortbounce,
  tcpServer,
  TEST_ISOLATES,
  waitUntil,
  writeAll,
} from "./helpers.ts";
import { passRule } from "../fixtures/rules.ts";

function rule(target: number, extra = ""): string {
  return passRule({ listen: "127.0.0.1:0", target, extra });
}

Deno.test("target dies mid-stream: the client sees the close, the error names the side", async () => {
  await using target = tcpServer(async (conn) => {
    await conn.read(new Uint8Array(1024)); // Take a little, then vanish with data unread: a reset.
    conn.close();
  });
  await using bouncer = await startBouncer(rule(target.port));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  const upload = writeAll(conn, randomBytes(8 * 1024 * 1024)).catch((e) => e);
  const got = await readAll(conn).catch(() => new Uint8Array(0));
  assertEquals(got.length, 0);
  await upload;
  conn.close();
  await bouncer.log.waitFor({ event: "error", error: /^target: (connection reset|broken pipe)$/ });
  await bouncer.log.waitFor({ event: "disconnect", reason: "reset", error: /^target: / });
});

Deno.test("client resets mid-stream: the target sees the close; a normal end (client-reset), no error", async () => {
  const targetSaw = Promise.withResolvers<string>();
  await using target = tcpServer(async (conn) => {
    // Keep sending until the bouncer closes us.
    const chunk = randomBytes(64 * 1024);
    try {
      for (;;) await writeAll(conn, chunk);
    } catch (error) {
      targetSaw.resolve((error as Error).name);
    }
  });
  await using bouncer = await startBouncer(rule(target.port));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await writeAll(conn, new TextEncoder().encode("hello"));
  await conn.read(new Uint8Array(1024));
  await delay(200); // Let unread data pile up in our receive buffer: closing now sends a reset.
  conn.close();
  assertMatch(await targetSaw.promise, /ConnectionReset|BrokenPipe/);
  const ended = await bouncer.log.waitFor({ event: "disconnect" });
  assertEquals([ended.reason, ended.level, ended.error], ["client-reset", "info", undefined]);
  assertEquals(bouncer.log.filter({ event: "error" }), [], "the client leaving is no error");
});

Deno.test("out of file descriptors: refused with a logged cause, serving again once they free up", async () => {
  await using target = tcpServer(echo);
  const dir = await Deno.makeTempDir({ prefix: "portbounce-fds-" });
  await Deno.writeTextFile(`${dir}/rules.toml`, rule(target.port, 'log = ["error"]\n'));
  // ulimit -n caps the bouncer alone (the shell execs it).
  await using bouncer = await startPortbounce(
    ["run", "-c", `${dir}/rules.toml`],
    dir,
    ["sh", "-c", 'ulimit -n 64 && exec "$@"', "sh"],
  );
  const port = bouncer.port();
  const held: Deno.Conn[] = [];
  try {
    // Hold connections until the bouncer runs out: 64 descriptors cannot hold 60 sessions.
    for (let i = 0; i < 60; i++) {
      held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    await waitUntil(
      () =>
        bouncer.log.filter({ message: /accept failed: Too many open files.*ulimit -n/ }).length +
            bouncer.log.filter({ event: "error", error: /Too many open files/ }).length > 0,
      "running out of descriptors said, with the cure",
      { state: () => bouncer.lines().join("\n") },
    );
    // Free them; new sessions are served again (once the accept loop's back-off ends).
    for (const conn of held.splice(0)) conn.close();
    const echoed = async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await writeAll(conn, new TextEncoder().encode("back"));
        await conn.closeWrite();
        return new TextDecoder().decode(await readAll(conn));
      } catch {
        return null;
      } finally {
        conn.close();
      }
    };
    await waitUntil(async () => await echoed() === "back", "a new session served again", {
      everyMs: 100,
    });
  } finally {
    for (const conn of held) conn.close();
  }
});

Deno.test("slow reader: memory stays bounded and nothing is lost", async () => {
  const size = 96 * 1024 * 1024;
  const upload = randomBytes(size);
  const release = Promise.withResolvers<void>();
  const received = Promise.withResolvers<{ sha256: string; bytes: number }>();
  await using target = tcpServer(async (conn) => {
    await release.promise; // Read nothing for a while.
    received.resolve(await hashUntilEof(conn));
  });
  await using bouncer = await startBouncer(rule(target.port, 'log = ["error"]\n'));
  const baseline = await rssKiB(bouncer.process.pid);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  const sending = writeAll(conn, upload).then(() => conn.closeWrite());
  await delay(2_000);
  const stalled = await rssKiB(bouncer.process.pid);
  release.resolve();
  await sending;
  const got = await received.promise;
  conn.close();
  assertEquals(got, { sha256: sha256(upload), bytes: size });
  // The kernel's socket buffers hold the backlog, not the bouncer's heap.
  assert(
    stalled - baseline < 16 * 1024,
    `RSS grew by ${stalled - baseline} KiB while the reader stalled`,
  );
});

Deno.test("20,000 connections opened and closed in a burst leak no descriptors or memory", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startPortbounce([
    "forward",
    "--log-level",
    "warning",
    `127.0.0.1:0=127.0.0.1:${target.port}`,
  ]);
  const port = bouncer.port();
  const pid = bouncer.process.pid;
  const burst = async (count: number) => {
    for (let done = 0; done < count; done += 200) {
      await Promise.all(Array.from({ length: 200 }, async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await writeAll(conn, new Uint8Array([1]));
        await conn.closeWrite();
        await readAll(conn);
        conn.close();
      }));
    }
  };
  // Warm up: JIT, pools, heap (each isolate's: with workers, the main isolate's heap grows
  // longer, as it accounts for every isolate's sessions).
  await burst(TEST_ISOLATES > 1 ? 20_000 : 2_000);
  await delay(1_000);
  const fdsBefore = await fdCount(pid);
  await burst(10_000);
  await delay(1_500);
  const rssHalfway = await rssKiB(pid);
  await burst(10_000);
  await delay(1_500);
  const fdsAfter = await fdCount(pid);
  const rssAfter = await rssKiB(pid);
  console.log(
    `    20,000 connections: fds ${fdsBefore} -> ${fdsAfter}; RSS ${rssHalfway} KiB after 10,000, ${rssAfter} KiB after 20,000`,
  );
  assertEquals(fdsAfter, fdsBefore);
  // The heap grows to a high-water mark in the first 10,000; a leak keeps growing after it.
  // Each isolate (with --workers) has a heap of its own.
  const rssBefore = rssHalfway;
  assert(
    rssAfter - rssBefore < 6 * 1024 * TEST_ISOLATES,
    `RSS grew by ${rssAfter - rssBefore} KiB in the second 10,000`,
  );
});

/** A client that connects with node:net, so the test can end it with a reset. */
function resettableClient(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

Deno.test("a client's reset ends its session even while the target does not read", async () => {
  const release = Promise.withResolvers<void>();
  await using target = tcpServer(() => release.promise); // Never reads: writes toward it block.
  await using bouncer = await startBouncer(rule(target.port));
  const pid = bouncer.process.pid;
  const fdsIdle = await fdCount(pid);
  const clients = await Promise.all(
    Array.from({ length: 20 }, () => resettableClient(bouncer.port())),
  );
  // Enough to fill the kernel's buffers both sides, so every upload direction blocks writing.
  const chunk = new Uint8Array(8 * 1024 * 1024);
  for (const client of clients) client.write(chunk);
  await delay(500);
  for (const client of clients) client.resetAndDestroy();
  const ended = await bouncer.log.waitFor({ event: "disconnect" }, 5_000, 20);
  release.resolve();
  assertEquals(ended.reason, "client-reset");
  assertEquals(bouncer.log.filter({ event: "disconnect", reason: "client-reset" }).length, 20);
  await waitUntil(
    async () => await fdCount(pid) === fdsIdle,
    "every session's descriptors closed",
    {
      timeoutMs: 1_000,
      state: () => fdCount(pid),
    },
  );
});

Deno.test("a write without progress for stall_timeout ends the session as stalled", async () => {
  const release = Promise.withResolvers<void>();
  await using target = tcpServer(() => release.promise); // Accepts, never reads.
  await using bouncer = await startBouncer(rule(target.port, 'stall_timeout = "1s"\n'));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  const started = performance.now();
  const upload = writeAll(conn, new Uint8Array(32 * 1024 * 1024)).catch(() => {});
  const ended = await bouncer.log.waitFor({ event: "disconnect" }, 10_000);
  const waited = performance.now() - started;
  conn.close();
  release.resolve();
  await upload;
  assertEquals(ended.reason, "stalled");
  assertMatch(ended.error as string, /^target: not reading/);
  assert(waited >= 1_000, `ended after ${waited} ms, before the stall timeout`);
});

Deno.test("idle_timeout never cuts a transfer that still flows to a slow reader", async () => {
  const size = 2 * 1024 * 1024;
  const download = randomBytes(size);
  const release = Promise.withResolvers<void>();
  await using target = tcpServer(async (conn) => {
    await writeAll(conn, download);
    await release.promise; // Stays open: the session ends by its idle timeout, after delivery.
  });
  await using bouncer = await startBouncer(rule(target.port, 'idle_timeout = "1s"\n'));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  // Read 32 KiB every 25 ms (about 1.3 MB/s): the bouncer's writes wait on this reader.
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(32 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    await delay(25);
  }
  conn.close();
  const got = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  chunks.reduce((offset, c) => (got.set(c, offset), offset + c.length), 0);
  assertEquals(got.length, size);
  assertEquals(sha256(got), sha256(download));
  const ended = await bouncer.log.waitFor({ event: "disconnect" });
  release.resolve();
  assertEquals([ended.reason, ended.bytes_down], ["idle-timeout", size]);
});

Deno.test("1,000 clients that never read a streaming target: memory stays within the budget", async () => {
  const chunk = randomBytes(256 * 1024);
  await using target = tcpServer(async (conn) => {
    try {
      for (;;) await writeAll(conn, chunk);
    } catch {
      // The bouncer closed us.
    }
  });
  await using bouncer = await startBouncer(
    `[server]\nbuffer_memory = "16MiB"\n` + rule(target.port, 'log = ["error"]\n'),
  );
  const pid = bouncer.process.pid;
  const before = await rssKiB(pid);
  const clients: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 1_000; i += 100) {
      clients.push(
        ...await Promise.all(
          Array.from(
            { length: 100 },
            () => Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() }),
          ),
        ),
      );
    }
    await delay(3_000);
    const grew = (await rssKiB(pid)) - before;
    console.log(`    1,000 non-reading clients: RSS grew ${Math.round(grew / 1024)} MiB`);
    // Without a budget each blocked direction held a 256 KiB buffer: +259 MiB measured before
    // the budget existed. With 16 MiB of large buffers, the rest is small buffers and the
    // garbage of relaying several MB into each client's kernel buffers (about 100 MiB here).
    assert(grew < 160 * 1024, `RSS grew by ${grew} KiB with 1,000 blocked directions`);
  } finally {
    for (const conn of clients) conn.close();
  }
});

Deno.test("a target's reset reaches the client as a clean end of stream (Deno cannot send RST); the log says reset", async () => {
  const server = net.createServer((socket) => {
    socket.write(new Uint8Array(98_304), () => setTimeout(() => socket.resetAndDestroy(), 100));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const port = (server.address() as net.AddressInfo).port;
    await using bouncer = await startBouncer(rule(port));
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
    const got = await readAll(conn); // Resolves: a FIN, not ECONNRESET (the runtime's limit).
    conn.close();
    assertEquals(got.length, 98_304);
    await bouncer.log.waitFor({
      event: "disconnect",
      reason: "reset",
      error: "target: connection reset",
    });
  } finally {
    server.close();
  }
});

Deno.test("clients that abandon downloads are no errors: nothing counted, no alarm", async () => {
  const chunk = randomBytes(256 * 1024);
  await using target = tcpServer(async (conn) => {
    for (let i = 0; i < 256; i++) await writeAll(conn, chunk); // 64 MiB, more than anyone waits for.
  });
  await using bouncer = await startBouncer(
    `[server]\nstatus = "127.0.0.1:0"\n` +
      rule(target.port, 'alarm_errors = "1/1m"\nlog = ["connect", "disconnect", "error"]\n'),
  );
  for (let i = 0; i < 3; i++) {
    // As `curl -m 1` does: read a while, then give up and close with data unread.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
    await conn.read(new Uint8Array(64 * 1024));
    await delay(100);
    conn.close();
  }
  await bouncer.log.waitFor({ event: "disconnect" }, 10_000, 3);
  for (const ended of bouncer.log.filter({ event: "disconnect" })) {
    assert(
      ["client-reset", "client-closed"].includes(ended.reason as string),
      String(ended.reason),
    );
  }
  assertEquals(bouncer.log.filter({ event: "error" }), []);
  const port = Number(bouncer.ready.status!.split(":").pop());
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assertMatch(metrics, /portbounce_errors_total\{rule="r"[^}]*\} 0\n/);
  assertMatch(metrics, /portbounce_alarm_active\{rule="r",alarm="errors"\} 0\n/);
});
