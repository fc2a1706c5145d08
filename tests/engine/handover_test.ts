/**
 * The hand-over socket in-process: one takeover at a time, an abandoned one
 * leaves the running instance as it was, a stopping instance can be taken
 * over but does not count as running, a dead one's socket is cleared, a
 * client that sends junk or nothing holds nothing up, and closing waits for a
 * release being answered.
 */
import { getLogger } from "@logtape/logtape";
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { tempDir } from "../fixtures/net.ts";
import {
  type HandoverActions,
  handoverPath,
  HandoverPoint,
  overlaps,
  requestTakeover,
  runningInstance,
  type TakeoverContact,
} from "../../src/daemon/handover.ts";

const log = getLogger(["portbounce-test"]);

function actions(stopping = false, released: number[] = []): HandoverActions {
  return {
    facts: () => ({
      pid: Deno.pid,
      stopping,
      listeners: [
        { protocol: "tcp", address: "0.0.0.0", port: 80 },
        { protocol: "udp", address: "127.0.0.1", port: 53 },
      ],
      status: { protocol: "tcp", address: "127.0.0.1", port: 9180 },
    }),
    release: (pid) => {
      released.push(pid);
      return Promise.resolve();
    },
    reload: () => Promise.resolve({ result: "applied", summary: "no change", problems: [] }),
  };
}

/** A point answering for this process, as a running instance would, and its pid file. */
async function openPoint(pidFile: string, stopping = false) {
  const released: number[] = [];
  await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
  const point = await HandoverPoint.open(
    handoverPath(pidFile, Deno.pid),
    actions(stopping, released),
    log,
  );
  assert(point instanceof HandoverPoint, JSON.stringify(point));
  return { point, released };
}

function found(contact: TakeoverContact) {
  assertEquals(contact.kind, "found", JSON.stringify(contact));
  return (contact as Extract<TakeoverContact, { kind: "found" }>).takeover;
}

const why = (contact: TakeoverContact) => (contact as { why: string }).why;

Deno.test("one takeover at a time; an abandoned one leaves the instance to the next", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point, released } = await openPoint(pidFile);
  try {
    const first = found(await requestTakeover(pidFile));
    assertEquals(first.running.listeners.map((l) => l.port), [80, 53]);
    assertEquals(first.running.status?.port, 9180);
    const second = await requestTakeover(pidFile);
    assertEquals(second.kind, "refused");
    assertMatch(why(second), /a takeover by process \d+ is under way/);
    first.abandon();
    // The point notices the closed connection; then the next takeover is welcome.
    let third: TakeoverContact | undefined;
    for (let i = 0; i < 50; i++) {
      third = await requestTakeover(pidFile);
      if (third.kind === "found") break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const takeover = found(third!);
    assertEquals(released, []);
    assertEquals(await takeover.release(), true);
    assertEquals(released, [Deno.pid]);
  } finally {
    await point.close();
  }
  // Closed: the socket file went with it.
  const after = await requestTakeover(pidFile);
  assertEquals(after.kind, "refused");
  assertMatch(why(after), /does not answer at .*p\.pid\.\d+\.sock/);
});

Deno.test("a stopping instance can be taken over, and does not count as running", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point, released } = await openPoint(pidFile, true);
  try {
    assertEquals(await runningInstance(pidFile), null);
    const takeover = found(await requestTakeover(pidFile));
    assertEquals(await takeover.release(), true);
    assertEquals(released, [Deno.pid]);
  } finally {
    await point.close();
  }
  const { point: live } = await openPoint(pidFile, false);
  try {
    assertEquals((await runningInstance(pidFile))?.pid, Deno.pid);
  } finally {
    await live.close();
  }
});

Deno.test("overlaps: same protocol and port, and the same address or a wildcard", () => {
  const at = (address: string, port = 80, protocol: "tcp" | "udp" = "tcp") => ({
    protocol,
    address,
    port,
  });
  assert(overlaps(at("10.0.0.1"), at("10.0.0.1")));
  assert(overlaps(at("0.0.0.0"), at("10.0.0.1")));
  assert(overlaps(at("10.0.0.1"), at("::")));
  assert(!overlaps(at("10.0.0.1"), at("10.0.0.2")));
  assert(!overlaps(at("10.0.0.1"), at("10.0.0.1", 81)));
  assert(!overlaps(at("10.0.0.1"), at("10.0.0.1", 80, "udp")));
});

Deno.test("closing waits for a release being answered, and drops idle connections", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
  const releasing = Promise.withResolvers<void>();
  const point = await HandoverPoint.open(handoverPath(pidFile, Deno.pid), {
    ...actions(),
    release: () => releasing.promise,
  }, log);
  assert(point instanceof HandoverPoint);
  const idle = await Deno.connect({ transport: "unix", path: handoverPath(pidFile, Deno.pid) });
  const takeover = found(await requestTakeover(pidFile));
  const released = takeover.release();
  await new Promise((resolve) => setTimeout(resolve, 50));
  let closed = false;
  const closing = point.close().then(() => closed = true);
  // The idle connection is dropped at once; the close waits for the release's answer.
  assertEquals(await idle.read(new Uint8Array(8)).catch(() => null), null);
  assertEquals(closed, false);
  releasing.resolve();
  assertEquals(await released, true);
  await closing;
  idle.close();
});

Deno.test("at most 8 connections are answered at once; the next waits for a free one", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point } = await openPoint(pidFile);
  const path = handoverPath(pidFile, Deno.pid);
  const silent = await Promise.all(
    Array.from({ length: 8 }, () => Deno.connect({ transport: "unix", path })),
  );
  try {
    // All 8 slots held by silence: a request waits, and is answered once one frees.
    const asking = requestTakeover(pidFile);
    await new Promise((resolve) => setTimeout(resolve, 100));
    silent[0].close();
    const takeover = found(await asking);
    takeover.abandon();
  } finally {
    for (const conn of silent.slice(1)) conn.close();
    await point.close();
  }
});

Deno.test("a dead instance's socket: start as usual, and the socket is cleared", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  await Deno.writeTextFile(pidFile, "4194000\n");
  const path = handoverPath(pidFile, 4194000);
  // A socket file nobody listens on, as a killed instance leaves it. (Deno removes the
  // file when a listener closes: bind under another name, rename, then close.)
  const bound = Deno.listen({ transport: "unix", path: `${dir}/other.sock` });
  await Deno.rename(`${dir}/other.sock`, path);
  bound.close();
  await Deno.stat(path);
  const contact = await requestTakeover(pidFile);
  assertEquals(contact.kind, "none");
  assertMatch(why(contact), /process 4194000 .* is not running: it ended without removing/);
  assertEquals(await Deno.stat(path).catch(() => null), null);
});

Deno.test("a pid file naming no hand-over socket, or holding no process id, is refused", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  await Deno.writeTextFile(pidFile, "1\n");
  const foreign = await requestTakeover(pidFile);
  assertEquals(foreign.kind, "refused");
  assertMatch(why(foreign), /process 1 .* does not answer at .*: it is not a portbounce/);
  await Deno.writeTextFile(pidFile, "12ab\n");
  assertMatch(why(await requestTakeover(pidFile)), /holds no process id/);
  assertEquals(await runningInstance(pidFile), null);
  await Deno.remove(pidFile);
  assertEquals(await requestTakeover(pidFile), {
    kind: "none",
    why: `no pid file at ${pidFile}`,
  });
});

Deno.test("the point replaces a dead socket of its own name, and nothing that is not a socket", async () => {
  await using dir = await tempDir();
  const path = `${dir}/p.pid.${Deno.pid}.sock`;
  const bound = Deno.listen({ transport: "unix", path: `${dir}/other.sock` });
  await Deno.rename(`${dir}/other.sock`, path);
  bound.close();
  const replaced = await HandoverPoint.open(path, actions(), log);
  assert(replaced instanceof HandoverPoint, JSON.stringify(replaced));
  // A live one answers: that process runs.
  assertEquals(await HandoverPoint.open(path, actions(), log), { running: Deno.pid });
  await replaced.close();
  await Deno.writeTextFile(path, "a file, not a socket");
  const refused = await HandoverPoint.open(path, actions(), log);
  assert("error" in refused);
  assertMatch(refused.error, /is in the way of the hand-over socket: not a socket/);
  assertEquals(await Deno.readTextFile(path), "a file, not a socket");
});

Deno.test("junk, silence and an endless line on the socket hold up no takeover", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point } = await openPoint(pidFile);
  const path = handoverPath(pidFile, Deno.pid);
  const silent = await Deno.connect({ transport: "unix", path });
  const junk = await Deno.connect({ transport: "unix", path });
  const endless = await Deno.connect({ transport: "unix", path });
  try {
    await junk.write(new TextEncoder().encode("{not json\n"));
    // More than the 64 KiB a message may hold, and no newline: the point hangs up.
    const big = new Uint8Array(80 * 1024).fill(0x61);
    const writing = (async () => {
      for (let at = 0; at < big.length;) at += await endless.write(big.subarray(at));
    })().catch(() => {});
    const closed = await endless.read(new Uint8Array(16)).catch(() => null);
    assertEquals(closed, null);
    await writing;
    const takeover = found(await requestTakeover(pidFile));
    takeover.abandon();
  } finally {
    for (const conn of [silent, junk, endless]) {
      try {
        conn.close();
      } catch {
        // Closed by the point.
      }
    }
    await point.close();
  }
});

Deno.test("a hand-over socket path longer than a Unix socket can hold is refused, saying so", async () => {
  const pidFile = `/tmp/${"d".repeat(110)}/p.pid`;
  // No pid file there: nothing runs, start as usual.
  assertEquals((await requestTakeover(pidFile)).kind, "none");
  const opened = await HandoverPoint.open(handoverPath(pidFile, 1), actions(), log);
  assert("error" in opened);
  assertMatch(opened.error, /bytes long; a Unix socket path holds at most 107/);
});
