/**
 * Faults: peers that die or reset mid-stream, running out of file
 * descriptors, a slow reader, and a burst of 20,000 connections. Each test
 * fails when portbounce loses data, leaks, or stops serving.
 */
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
  await bouncer.log.waitFor({ event: "disconnect", reason: "error", error: /^target: / });
});

Deno.test("client resets mid-stream: the target sees the close, the error names the client", async () => {
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
  await bouncer.log.waitFor({ event: "error", error: /^client: (connection reset|broken pipe)$/ });
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
    await delay(1_000);
    assert(
      bouncer.log.filter({ message: /accept failed: Too many open files/ }).length +
          bouncer.log.filter({ event: "error", error: /Too many open files/ }).length > 0,
      bouncer.lines().join("\n"),
    );
    // Free them; new sessions are served again.
    for (const conn of held.splice(0)) conn.close();
    await delay(1_500);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode("back"));
    await conn.closeWrite();
    assertEquals(new TextDecoder().decode(await readAll(conn)), "back");
    conn.close();
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
  await burst(2_000); // Warm up: JIT, pools, heap.
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
  const rssBefore = rssHalfway;
  assert(
    rssAfter - rssBefore < 6 * 1024,
    `RSS grew by ${rssAfter - rssBefore} KiB in the second 10,000`,
  );
});
