/**
 * The hand-over socket in-process: one takeover at a time, an abandoned one
 * leaves the running instance as it was, a stopping instance refuses, a pid
 * file naming another process is refused, and a client that sends junk or
 * nothing holds nothing up.
 */
import { getLogger } from "@logtape/logtape";
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { tempDir } from "../e2e/helpers.ts";
import {
  type HandoverActions,
  handoverPath,
  HandoverPoint,
  requestTakeover,
  type TakeoverContact,
} from "../../src/server/handover.ts";

const log = getLogger(["portbounce-test"]);

/** A point answering for this process, as a running instance would. */
async function openPoint(pidFile: string, refusal: () => string | null = () => null) {
  const released: number[] = [];
  const actions: HandoverActions = {
    facts: () => ({
      pid: Deno.pid,
      listeners: ["tcp 127.0.0.1:80", "udp 127.0.0.1:53"],
      status: null,
    }),
    refusal,
    release: (pid) => {
      released.push(pid);
      return Promise.resolve();
    },
  };
  await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
  const point = await HandoverPoint.open(handoverPath(pidFile), actions, log);
  assert(point instanceof HandoverPoint, JSON.stringify(point));
  return { point, released };
}

function found(contact: TakeoverContact) {
  assertEquals(contact.kind, "found", JSON.stringify(contact));
  return (contact as Extract<TakeoverContact, { kind: "found" }>).takeover;
}

Deno.test("one takeover at a time; an abandoned one leaves the instance to the next", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point, released } = await openPoint(pidFile);
  try {
    const first = found(await requestTakeover(pidFile));
    assertEquals(first.running.listeners, ["tcp 127.0.0.1:80", "udp 127.0.0.1:53"]);
    const second = await requestTakeover(pidFile);
    assertEquals(second.kind, "refused");
    assertMatch((second as { why: string }).why, /a takeover by process \d+ is under way/);
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
    // Released: the socket is gone with the point.
    const after = await requestTakeover(pidFile);
    assertEquals(after.kind, "refused");
    assertMatch((after as { why: string }).why, /does not answer at .*p\.pid\.sock/);
  } finally {
    point.close();
  }
});

Deno.test("a stopping instance refuses a takeover, saying why", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point } = await openPoint(pidFile, () => "it is stopping (SIGTERM)");
  try {
    const contact = await requestTakeover(pidFile);
    assertEquals(contact.kind, "refused");
    assertMatch((contact as { why: string }).why, /refused: it is stopping \(SIGTERM\)/);
  } finally {
    point.close();
  }
});

Deno.test("a pid file naming another process than the one answering is refused", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point } = await openPoint(pidFile);
  try {
    await Deno.writeTextFile(pidFile, "1\n");
    const contact = await requestTakeover(pidFile);
    assertEquals(contact.kind, "refused");
    assertMatch(
      (contact as { why: string }).why,
      new RegExp(`names process 1, but the portbounce answering .* is process ${Deno.pid}`),
    );
  } finally {
    point.close();
  }
});

Deno.test("a second point on a live socket learns who runs; a stale socket is replaced", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point } = await openPoint(pidFile);
  const actions: HandoverActions = {
    facts: () => ({ pid: 1, listeners: [], status: null }),
    refusal: () => null,
    release: () => Promise.resolve(),
  };
  try {
    assertEquals(await HandoverPoint.open(handoverPath(pidFile), actions, log), {
      running: Deno.pid,
    });
  } finally {
    point.close();
  }
  // A socket file nobody listens on, as a killed instance leaves it. (Deno removes the
  // file when a listener closes: bind under another name, rename, then close.)
  const path = `${dir}/stale.sock`;
  const bound = Deno.listen({ transport: "unix", path: `${dir}/other.sock` });
  await Deno.rename(`${dir}/other.sock`, path);
  bound.close();
  await Deno.stat(path);
  const replaced = await HandoverPoint.open(path, actions, log);
  assert(replaced instanceof HandoverPoint, JSON.stringify(replaced));
  replaced.close();
});

Deno.test("junk, silence and an endless line on the socket hold up no takeover", async () => {
  await using dir = await tempDir();
  const pidFile = `${dir}/p.pid`;
  const { point } = await openPoint(pidFile);
  const path = handoverPath(pidFile);
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
    point.close();
  }
});

Deno.test("a hand-over socket path longer than a Unix socket can hold is refused, saying so", async () => {
  const pidFile = `/tmp/${"d".repeat(110)}/p.pid`;
  const contact = await requestTakeover(pidFile);
  // No pid file there: nothing runs, start as usual.
  assertEquals(contact.kind, "none");
  const opened = await HandoverPoint.open(handoverPath(pidFile), {
    facts: () => ({ pid: 1, listeners: [], status: null }),
    refusal: () => null,
    release: () => Promise.resolve(),
  }, log);
  assert("error" in opened);
  assertMatch(opened.error, /bytes long; a Unix socket path holds at most 107/);
});
