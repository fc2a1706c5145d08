/**
 * `[server] workers`: several isolates accept on each TCP port, and what
 * must be one still is: limits and bandwidth across isolates, every session
 * in the one session list and log, reloads applied everywhere before their
 * summary, a dead worker restarted, a worker that cannot bind failing start-up.
 * In-process (the workers are real isolates); Linux only, as SO_REUSEPORT.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { startDaemon } from "../harness.ts";
import { passRule } from "../fixtures/rules.ts";
import {
  delay,
  echo,
  freePortRange,
  portIsFree,
  readAll,
  tcpServer,
  waitUntil,
  writeAll,
} from "../fixtures/net.ts";
import { Daemon } from "../../src/daemon/daemon.ts";
import { loadRuleText } from "../../src/server/rule_file.ts";
import { ExitCode } from "../../src/daemon/exit_codes.ts";

const linux = Deno.build.os === "linux";

function rule(target: number, extra = ""): string {
  return passRule({ name: "web", listen: "127.0.0.1:0", target, extra });
}

/** Opens `count` connections at once and keeps them. */
async function connectMany(port: number, count: number): Promise<Deno.TcpConn[]> {
  return await Promise.all(
    Array.from({ length: count }, () => Deno.connect({ hostname: "127.0.0.1", port })),
  );
}

Deno.test({
  name: "workers: max_sessions counts every isolate's sessions",
  ignore: !linux,
  async fn() {
    const release = Promise.withResolvers<void>();
    await using target = tcpServer(() => release.promise); // Holds every session.
    await using bouncer = await startDaemon(
      rule(target.port, 'max_sessions = 3\nlog = ["connect", "block"]\n'),
      { workers: 2 },
    );
    const conns = await connectMany(bouncer.port(), 16);
    try {
      const web = bouncer.daemon.engine.stats.rules.get("web")!;
      await waitUntil(() => web.total + (web.blocked.max_sessions ?? 0) === 16);
      // Every client is decided: the admitted ones' connect lines follow their connects.
      await waitUntil(() => bouncer.log.filter({ event: "connect" }).length >= web.total);
      assertEquals(bouncer.log.filter({ event: "connect" }).length, 3);
      // (The log shows the first refusal of a client and cause, then a count of the rest.)
      assertEquals(web.blocked.max_sessions, 13);
      const perWorker = bouncer.daemon.workers!.clientsPerWorker();
      console.log(
        `    16 clients: ${16 - perWorker[0]} decided by the main isolate, ${
          perWorker[0]
        } by the worker`,
      );
      assert(perWorker[0] > 0 && perWorker[0] < 16, "both isolates took clients");
      assertEquals(bouncer.daemon.engine.sessions.size, 3);
    } finally {
      release.resolve();
      closeAll(conns);
    }
  },
});

Deno.test({
  name: "workers: max_sessions_per_client holds across isolates",
  ignore: !linux,
  async fn() {
    await using target = tcpServer(async (conn) => void await readAll(conn)); // Until the client ends.
    await using bouncer = await startDaemon(
      rule(
        target.port,
        'max_sessions_per_client = 2\nthrottle = "5/10s"\nlog = ["connect", "block"]\n',
      ),
      { workers: 2 },
    );
    const conns = await connectMany(bouncer.port(), 12);
    try {
      const web = bouncer.daemon.engine.stats.rules.get("web")!;
      await waitUntil(() => web.total + (web.blocked.max_sessions_per_client ?? 0) === 12);
      await waitUntil(() => bouncer.log.filter({ event: "connect" }).length >= web.total);
      assertEquals(bouncer.log.filter({ event: "connect" }).length, 2);
      assertEquals(web.blocked.max_sessions_per_client, 10);
    } finally {
      closeAll(conns);
    }
  },
});

Deno.test({
  name: "workers: throttle counts the session starts of every isolate",
  ignore: !linux,
  async fn() {
    await using target = tcpServer(async (conn) => void await readAll(conn));
    await using bouncer = await startDaemon(rule(target.port, 'throttle = "5/10s"\n'), {
      workers: 2,
    });
    const conns = await connectMany(bouncer.port(), 12);
    try {
      const web = bouncer.daemon.engine.stats.rules.get("web")!;
      await waitUntil(() => web.total + (web.blocked.throttle ?? 0) === 12);
      assertEquals([web.total, web.blocked.throttle], [5, 7]);
    } finally {
      closeAll(conns);
    }
  },
});

Deno.test({
  name: "workers: one bandwidth budget for the rule, whichever isolate relays",
  ignore: !linux,
  async fn() {
    const chunk = new Uint8Array(64 * 1024);
    await using target = tcpServer(async (conn) => {
      try {
        for (;;) await writeAll(conn, chunk);
      } catch {
        // The client left.
      }
    });
    const rate = 256 * 1024;
    await using bouncer = await startDaemon(rule(target.port, 'bandwidth = "256KiB/s"\n'), {
      workers: 2,
    });
    const conns = await connectMany(bouncer.port(), 8);
    const seconds = 2;
    let total = 0;
    const deadline = setTimeout(() => conns.forEach((conn) => conn.close()), seconds * 1000);
    await Promise.all(conns.map(async (conn) => {
      const buffer = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await conn.read(buffer);
          if (n === null) break;
          total += n;
        }
      } catch {
        // Closed at the deadline.
      }
    }));
    clearTimeout(deadline);
    const perWorker = bouncer.daemon.workers!.clientsPerWorker();
    console.log(
      `    8 downloads for ${seconds} s at 256 KiB/s: ${Math.round(total / 1024)} KiB in all (${
        8 - perWorker[0]
      } relayed by the main isolate, ${perWorker[0]} by the worker)`,
    );
    // Two budgets (one per isolate) would let about twice through.
    assert(total <= rate * (seconds + 0.3), `${total} bytes in ${seconds} s at ${rate} B/s`);
    assert(total >= rate * (seconds - 0.5), `only ${total} bytes in ${seconds} s`);
  },
});

Deno.test({
  name: "workers: a reload is in force in every isolate when its summary is logged",
  ignore: !linux,
  async fn() {
    await using target = tcpServer(async (conn) => {
      await writeAll(conn, new TextEncoder().encode("hi"));
    });
    const [a, b] = [freeTcpPort(), freeTcpPort()];
    const listenRule = (port: number) =>
      `[[rule]]\nname = "r${port}"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
    await using bouncer = await startDaemon(listenRule(a), { workers: 2 });
    await bouncer.reload(listenRule(b)); // Resolves after the summary line.
    assertEquals(bouncer.log.filter({ message: /^reload: listeners: 1 added/ }).length, 1);
    // The removed port is closed in both isolates, the added one open in both.
    for (let i = 0; i < 20; i++) {
      const refused = await Deno.connect({ hostname: "127.0.0.1", port: a }).then(
        (conn) => (conn.close(), false),
        () => true,
      );
      assert(refused, `connection ${i} to the removed listener was accepted`);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: b });
      assertEquals(new TextDecoder().decode(await readAll(conn)), "hi");
      conn.close();
    }
    const sockets = await listeningSockets(b);
    assertEquals(sockets, 2, "both isolates listen on the added port");
  },
});

Deno.test({
  name: "workers: a worker that dies is logged and started again; its port keeps serving",
  ignore: !linux,
  async fn() {
    await using target = tcpServer(async (conn) => {
      await writeAll(conn, new TextEncoder().encode("ok"));
    });
    const marker = await Deno.makeTempFile();
    Deno.env.set("PORTBOUNCE_TEST_FAIL_ONCE", marker);
    try {
      await using bouncer = await startDaemon(rule(target.port, 'log = ["connect", "error"]\n'), {
        workers: 2,
        workerModule: new URL("../fixtures/workers/fails_once.ts", import.meta.url),
        workerRestartDelayMs: 50,
      });
      const failed = await bouncer.log.waitFor({ message: /^worker 1 failed: / }, 5_000);
      assertMatch(String(failed.message), /worker failure for the test; starting it again/);
      await bouncer.log.waitFor({ message: "worker 1 started again" }, 5_000);
      for (let i = 0; i < 20; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
        assertEquals(new TextDecoder().decode(await readAll(conn)), "ok");
        conn.close();
      }
      assertEquals(await listeningSockets(bouncer.port()), 2);
    } finally {
      Deno.env.delete("PORTBOUNCE_TEST_FAIL_ONCE");
      await Deno.remove(marker).catch(() => {});
    }
  },
});

Deno.test({
  name: "workers: a worker started again serves every listener it could bind, not none",
  ignore: !linux,
  async fn() {
    const [a, b] = [freeTcpPort(), freeTcpPort()];
    const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 }); // Not shared: unbindable.
    const marker = await Deno.makeTempFile();
    Deno.env.set("PORTBOUNCE_TEST_FAIL_ONCE", marker);
    Deno.env.set("PORTBOUNCE_TEST_BLOCKED", String(blocker.addr.port));
    Deno.env.set("PORTBOUNCE_TEST_UNBINDABLE", `:${b}`);
    try {
      await using bouncer = await startDaemon(
        passRule({ name: "a", listen: `127.0.0.1:${a}`, target: 9 }) +
          passRule({ name: "b", listen: `127.0.0.1:${b}`, target: 9 }),
        {
          workers: 2,
          workerModule: new URL(
            "../fixtures/workers/fails_once_then_misses_one.ts",
            import.meta.url,
          ),
          workerRestartDelayMs: 50,
        },
      );
      await bouncer.log.waitFor({ message: /^worker 1: cannot bind tcp 127\.0\.0\.1:/ }, 5_000);
      await bouncer.log.waitFor({ message: "worker 1 started again" }, 5_000);
      // Listener a: the main isolate's socket and the worker's; b: the main isolate's only.
      assertEquals(await listeningSockets(a), 2);
      assertEquals(await listeningSockets(b), 1);
    } finally {
      for (const name of ["FAIL_ONCE", "BLOCKED", "UNBINDABLE"]) {
        Deno.env.delete(`PORTBOUNCE_TEST_${name}`);
      }
      blocker.close();
      await Deno.remove(marker).catch(() => {});
    }
  },
});

Deno.test({
  name: "workers: a drain deadline never closes a session of a worker started again since",
  ignore: !linux,
  async fn() {
    const release = Promise.withResolvers<void>();
    await using target = tcpServer(() => release.promise); // Holds every session.
    const [oldPort, newPort] = [freeTcpPort(), freeTcpPort()];
    const head =
      `[server]\nreload_drain_timeout = "1500ms"\n[defaults]\nlog = ["connect", "disconnect"]\n`;
    const old =
      `[[rule]]\nname = "old"\nlisten = "127.0.0.1:${oldPort}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
    const fresh =
      `[[rule]]\nname = "fresh"\nlisten = "127.0.0.1:${newPort}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
    const marker = await Deno.makeTempFile();
    Deno.env.set("PORTBOUNCE_TEST_FAIL_ONCE", marker);
    const conns: Deno.TcpConn[] = [];
    try {
      await using bouncer = await startDaemon(head + old + fresh, {
        workers: 2,
        workerModule: new URL("../fixtures/workers/fails_after_reload.ts", import.meta.url),
        workerRestartDelayMs: 50,
      });
      // Sessions of "old" in both isolates; the worker numbers its own from 1.
      conns.push(...await connectMany(oldPort, 16));
      await waitUntil(() => bouncer.daemon.engine.sessions.size === 16);
      // The reload leaves them draining for 1.5 s; the worker dies just after applying it.
      await bouncer.reload(head + fresh);
      await bouncer.log.waitFor({ message: "worker 1 started again" }, 5_000);
      // The new worker numbers its sessions from 1 again.
      conns.push(...await connectMany(newPort, 16));
      await waitUntil(() =>
        bouncer.daemon.engine.sessions.list().filter((s) => s.rule.name === "fresh").length === 16
      );
      await delay(1_500); // The old deadlines pass.
      assertEquals(
        bouncer.log.filter({ event: "disconnect", rule: "fresh" }),
        [],
        "a session of the new worker was closed by an old drain deadline",
      );
    } finally {
      Deno.env.delete("PORTBOUNCE_TEST_FAIL_ONCE");
      await Deno.remove(marker).catch(() => {});
      release.resolve();
      closeAll(conns);
    }
  },
});

Deno.test({
  name: "workers: a listener a worker cannot bind fails start-up (exit 3), nothing left bound",
  ignore: !linux,
  async fn() {
    const port = freeTcpPort();
    const loaded = await loadRuleText(
      `[[rule]]\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:9"\n`,
      "test",
    );
    assert(loaded.ok);
    const exit = await Daemon.start(loaded, {
      overrides: { outputs: [] },
      handleSignals: false,
      workers: 2,
      workerModule: new URL("../fixtures/workers/cannot_bind.ts", import.meta.url),
    });
    assertEquals(exit, ExitCode.bind);
    assert(portIsFree(port), "the main isolate's listener was closed");
  },
});

Deno.test({
  name: "workers: a reload that adds max_sessions counts the sessions let in before it",
  ignore: !linux,
  async fn() {
    const release = Promise.withResolvers<void>();
    await using target = tcpServer(() => release.promise);
    const port = freeTcpPort();
    const rules = (extra: string) =>
      `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n${extra}`;
    await using bouncer = await startDaemon(rules('log = ["connect"]\n'), { workers: 2 });
    const first = await connectMany(port, 10);
    const later: Deno.TcpConn[] = [];
    try {
      await waitUntil(() => bouncer.daemon.engine.sessions.size === 10);
      await bouncer.reload(rules('log = ["connect", "block"]\nmax_sessions = 12\n'));
      later.push(...await connectMany(port, 10));
      const web = bouncer.daemon.engine.stats.rules.get("web")!;
      // Every client is decided (and each admitted one tracked as it was counted).
      await waitUntil(() => web.total + (web.blocked.max_sessions ?? 0) === 20);
      // As with one isolate: the ten from before count, so two more fit.
      assertEquals(bouncer.daemon.engine.sessions.size, 12);
      assertEquals(web.blocked.max_sessions, 8);
    } finally {
      release.resolve();
      closeAll([...first, ...later]);
    }
  },
});

Deno.test({
  name: "workers: sessions opened while a reload removes their listener drain like the others",
  ignore: !linux,
  async fn() {
    const release = Promise.withResolvers<void>();
    await using target = tcpServer(() => release.promise);
    await using other = tcpServer(() => release.promise);
    const [port, keepPort] = [freeTcpPort(), freeTcpPort()];
    const head = `[server]\nreload_drain_timeout = "500ms"\n`;
    const keep =
      `[[rule]]\nname = "keep"\nlisten = "127.0.0.1:${keepPort}"\nbounce_to = "127.0.0.1:${other.port}"\n`;
    const old =
      `[[rule]]\nname = "old"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
    await using bouncer = await startDaemon(head + keep + old, { workers: 2 });
    const conns: Deno.TcpConn[] = [];
    let connecting = true;
    // New clients keep arriving on the listener the reload removes.
    const stream = (async () => {
      while (connecting) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
        if (conn) conns.push(conn);
        await delay(1);
      }
    })();
    try {
      await waitUntil(() => conns.length >= 10);
      await bouncer.reload(head + keep);
      connecting = false;
      await stream;
      const live = () =>
        bouncer.daemon.engine.sessions.list().filter((s) => s.rule.name === "old").length;
      await waitUntil(() => live() === 0, "no live session", { timeoutMs: 3_000 });
      assert(
        bouncer.log.filter({ event: "disconnect", rule: "old", reason: "drained" }).length > 0,
      );
    } finally {
      connecting = false;
      release.resolve();
      closeAll(conns);
    }
  },
});

Deno.test({
  name: "workers: a stop during a reload neither waits for nor fails the reload",
  ignore: !linux,
  async fn() {
    await using target = tcpServer(echo);
    await using bouncer = await startDaemon(rule(target.port), { workers: 2 });
    const pool = bouncer.daemon.workers!;
    const started = performance.now();
    // The stop's question goes to the worker while the reload's is still unanswered.
    const reloaded = pool.reload(pool.rules);
    await pool.stopAccepting();
    assertEquals(await reloaded, []);
    const took = performance.now() - started;
    assert(took < 5_000, `reload and stop took ${took} ms`);
  },
});

Deno.test({
  name: "workers: the reload line counts every session it revokes, reported late or not",
  ignore: !linux,
  async fn() {
    const port = freeTcpPort();
    for (let round = 0; round < 5; round++) {
      const release = Promise.withResolvers<void>();
      await using target = tcpServer(() => release.promise);
      // max_sessions makes a worker ask the main isolate: its sessions open after an answer
      // that a reload may overtake.
      const rules = (from: string) =>
        `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n` +
        `from = "${from}"\nmax_sessions = 1000\nlog = ["connect", "block"]\n`;
      await using bouncer = await startDaemon(rules("127.0.0.0/8"), { workers: 2 });
      const conns = Array.from(
        { length: 40 },
        () => Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null),
      );
      try {
        // A few milliseconds after the clients: some sessions are reported after the reload.
        await delay(round);
        await bouncer.reload(rules("127.0.0.2/32"));
        const line = await bouncer.log.waitFor({ message: /^reload: / });
        const counted = Number(/(\d+) revoked/.exec(line.message!)![1]);
        const web = bouncer.daemon.engine.stats.rules.get("web")!;
        // Every client is either let in before the reload (and revoked) or refused by the new rules.
        await waitUntil(() => web.total + (web.blocked["no-matching-rule"] ?? 0) >= 40);
        await waitUntil(() => bouncer.daemon.engine.sessions.size === 0);
        assertEquals(counted, web.total, `round ${round}: ${line.message}`);
      } finally {
        release.resolve();
        closeAll((await Promise.all(conns)).filter((c) => c !== null));
      }
    }
  },
});

function closeAll(conns: Deno.TcpConn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed by the bouncer's refusal.
    }
  }
}

function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Sockets listening on 127.0.0.1:`port` (`ss`). */
async function listeningSockets(port: number): Promise<number> {
  const { stdout } = await new Deno.Command("ss", { args: ["-Hltn", `sport = :${port}`] })
    .output();
  return new TextDecoder().decode(stdout).trim().split("\n").filter((l) => l !== "").length;
}

Deno.test({
  name:
    "workers: a listener a reload removes stops accepting in the workers at once, not once their plan is built",
  ignore: !linux,
  async fn() {
    await using target = tcpServer(echo);
    const [wide, victim] = [freePortRange(1), freePortRange(1)];
    // Many rules, so that a worker's plan takes a while to build (in slices).
    const many = (tag: string) =>
      `# ${tag}\n` +
      Array.from({ length: 6_000 }, (_, i) =>
        `[[rule]]\nname = "f${i}"\nlisten = "127.0.0.1:${wide}"\nbounce_to = "127.0.0.1:${target.port}"\nfrom = "10.${
          (i >> 8) & 255
        }.${i & 255}.0/24"\n`).join("\n");
    const removed =
      `[[rule]]\nname = "victim"\nlisten = "127.0.0.1:${victim}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
    await using bouncer = await startDaemon(removed + many("a"), { workers: 2 });
    await Deno.writeTextFile(bouncer.ruleFile, many("b"));
    let done = false;
    const reloading = bouncer.daemon.reload().then(() => done = true);
    await waitUntil(
      () => !bouncer.daemon.engine.boundAddresses().some((a) => a.port === victim),
      "the main isolate let go of the removed listener",
    );
    let served = 0;
    while (!done) {
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: victim });
        await writeAll(conn, new TextEncoder().encode("x"));
        await conn.closeWrite();
        if (new TextDecoder().decode(await readAll(conn)) === "x") served++;
        conn.close();
      } catch {
        // Refused or reset: what a removed listener does.
      }
    }
    await reloading;
    // Only those a worker accepted before the reload reached it (the message's way over).
    assert(served <= 3, `${served} sessions served on the removed port during the reload`);
  },
});
