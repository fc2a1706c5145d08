/**
 * What an adversarial tester found (issue #16), each as a regression test:
 * the SIGUSR1 debugger, the status endpoint under descriptor exhaustion and
 * hostile HTTP, a vanished log reader and a full disk, UDP replies beyond the
 * buffer budget, odd rule files, forged log lines, the descriptor limit.
 */
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import { passRule } from "../fixtures/rules.ts";
import {
  delay,
  echo,
  exchange,
  fdCount,
  portbounceCommand,
  portIsFree,
  rawHttp,
  receiveWithin,
  runCli,
  startBouncer,
  startPortbounce,
  statusPort,
  tcpServer,
  tempDir,
  udpSocket,
  waitUntil,
} from "./helpers.ts";

Deno.test("SIGUSR1 opens no debugger: portbounce holds 127.0.0.1:9229 and answers nothing there", async () => {
  // Another portbounce on this machine (an operator's, a parallel run) may hold the port already:
  // then this one says so, and the debugger cannot open either.
  const heldElsewhere = !portIsFree(9229);
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    passRule({ listen: "127.0.0.1:0", target: target.port }),
  );
  bouncer.signal("SIGUSR1");
  await bouncer.log.waitFor({
    message: heldElsewhere
      ? /^SIGUSR1 ignored: 127\.0\.0\.1:9229 is held by another process/
      : /^SIGUSR1 ignored: portbounce holds 127\.0\.0\.1:9229/,
  });
  await delay(300);
  if (!heldElsewhere) {
    // The inspector would answer its HTTP discovery endpoint; nothing does.
    assertEquals(
      await rawHttp(9229, "GET /json/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
      "",
    );
  }
  assertEquals(await exchange(bouncer.port(), "still relaying"), "still relaying");
});

Deno.test("the status endpoint answers only to its own address's name (DNS rebinding)", async () => {
  await using bouncer = await startBouncer(
    `[server]\nstatus = "127.0.0.1:0"\n` + passRule({ listen: "127.0.0.1:0", target: 9 }),
  );
  const port = statusPort(bouncer);
  const get = (host: string) => rawHttp(port, `GET /status.json HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  assertMatch(await get("rebind.attacker.example"), /^HTTP\/1\.1 421 /);
  assertMatch(await get(`rebind.attacker.example:${port}`), /^HTTP\/1\.1 421 /);
  assertMatch(await get(`127.0.0.1:${port + 1}`), /^HTTP\/1\.1 421 /);
  assertMatch(await get(`127.0.0.1:${port}`), /^HTTP\/1\.1 200 /);
  assertMatch(await get(`localhost:${port}`), /^HTTP\/1\.1 200 /);
  assertMatch(await rawHttp(port, "GET / HTTP/1.0\r\n\r\n"), /^HTTP\/1\.1 421 /, "no Host at all");
  assertMatch(await rawHttp(port, "garbage\r\n\r\n"), /^HTTP\/1\.1 400 /);
  assertMatch(
    await rawHttp(port, `GET /${"a".repeat(9_000)} HTTP/1.1\r\n`),
    /^HTTP\/1\.1 431 /,
    "an oversized head is refused, not buffered",
  );
});

Deno.test("the status endpoint caps idle connections and drops silent ones; the relay is not starved", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[server]\nstatus = "127.0.0.1:0"\n` + passRule({ listen: "127.0.0.1:0", target: target.port }),
  );
  const port = statusPort(bouncer);
  const fdsBefore = await fdCount(bouncer.process.pid);
  const idle = await Promise.all(
    Array.from({ length: 500 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
  );
  try {
    await delay(300);
    // At most 32 are accepted at once; the rest wait in the kernel's queue, holding no descriptor
    // of the bouncer (a few more descriptors are the runtime's own), and the relay is untouched.
    const fds = await fdCount(bouncer.process.pid);
    assert(fds - fdsBefore < 64, `${fds - fdsBefore} descriptors more for 500 connections`);
    assertEquals(await exchange(bouncer.port(), "relay"), "relay");
    // Silent ones are closed, quickly while every slot is taken: all 500 within a few seconds.
    const closed = await Promise.all(
      idle.map((conn) =>
        Promise.race([
          conn.read(new Uint8Array(1)).then(() => true, () => true),
          delay(10_000).then(() => false),
        ])
      ),
    );
    assertEquals(closed.filter((c) => c).length, 500);
    assertMatch(
      await rawHttp(port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`),
      /^HTTP\/1\.1 200 /,
    );
  } finally {
    for (const conn of idle) {
      try {
        conn.close();
      } catch {
        // Closed above.
      }
    }
  }
});

Deno.test("out of descriptors with the status endpoint on: no crash, both serve again afterwards", async () => {
  await using target = tcpServer(echo);
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    `[server]\nstatus = "127.0.0.1:0"\n` +
      passRule({ listen: "127.0.0.1:0", target: target.port, extra: "log = []" }),
  );
  await using bouncer = await startPortbounce(
    ["run", "-c", `${dir}/rules.toml`, "--log-format", "json"],
    undefined,
    ["sh", "-c", 'ulimit -n 128 && exec "$@"', "sh"],
  );
  const port = statusPort(bouncer);
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 70; i++) {
      held.push(await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() }));
    }
    // While descriptors are short, scrapes wait in the accept queue or fail; none may crash it.
    await Promise.all(
      Array.from(
        { length: 5 },
        () =>
          rawHttp(port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, 1_000)
            .catch(() => ""),
      ),
    );
    await delay(300);
    for (const conn of held.splice(0)) conn.close();
    await waitUntil(
      async () =>
        /^HTTP\/1\.1 200 /.test(
          await rawHttp(port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, 1_000)
            .catch(() => ""),
        ),
      "the status endpoint answers again",
    );
    assertEquals(await exchange(bouncer.port(), "back"), "back");
  } finally {
    for (const conn of held) conn.close();
  }
  bouncer.signal("SIGTERM");
  assertEquals((await bouncer.exited()).code, 0, "it never crashed");
});

Deno.test("a vanished log reader costs lines, counted, never the process", async () => {
  await using target = tcpServer(echo);
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    `[server]\nstatus = "127.0.0.1:0"\n` + passRule({ listen: "127.0.0.1:0", target: target.port }),
  );
  const child = (await portbounceCommand(
    ["run", "-c", `${dir}/rules.toml`, "--ready-file", `${dir}/ready.json`],
    { stdout: "null" },
  )).spawn();
  // Like `| head -1`: read a little, then go away.
  const reader = child.stderr.getReader();
  await reader.read();
  await reader.cancel();
  let ready;
  for (let i = 0; i < 100 && !ready; i++) {
    ready = await Deno.readTextFile(`${dir}/ready.json`).then(JSON.parse).catch(() => undefined);
    if (!ready) await delay(50);
  }
  const port = ready.listeners[0].port;
  for (let i = 0; i < 5; i++) assertEquals(await exchange(port, `x${i}`), `x${i}`);
  const statusAt = Number(ready.status.split(":").pop());
  const status = JSON.parse(
    (await rawHttp(statusAt, `GET /status.json HTTP/1.1\r\nHost: ${ready.status}\r\n\r\n`)).split(
      "\r\n\r\n",
    )[1],
  );
  assert(status.log.lines_failed > 0, JSON.stringify(status.log));
  child.kill("SIGTERM");
  assertEquals((await child.status).code, 0);
});

const root = Deno.uid() === 0;

Deno.test({
  name: "a full disk under the log file: lines are counted as lost, relaying goes on",
  ignore: !root,
  async fn() {
    await using target = tcpServer(echo);
    await using dir = await tempDir();
    // A 64 KiB file system, filled up: every log write fails with ENOSPC.
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir],
    }).output();
    assert(mount.success, new TextDecoder().decode(mount.stderr));
    try {
      await Deno.writeFile(`${dir}/filler`, new Uint8Array(64 * 1024)).catch(() => {});
      await using bouncer = await startBouncer(
        `[server]\nstatus = "127.0.0.1:0"\nlog = ["${dir}/portbounce.log", "stderr"]\n` +
          passRule({ listen: "127.0.0.1:0", target: target.port }),
      );
      for (let i = 0; i < 3; i++) assertEquals(await exchange(bouncer.port(), "data"), "data");
      const port = statusPort(bouncer);
      const logStatus = async () =>
        JSON.parse(
          (await rawHttp(port, `GET /status.json HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`))
            .split("\r\n\r\n")[1],
        ).log;
      // Three sessions' connect and disconnect lines, each failing to be written.
      await waitUntil(async () => (await logStatus()).lines_failed >= 6, "6 lines failed", {
        state: logStatus,
      });
      const log = await logStatus();
      assertMatch(log.last_error, /No space left on device/);
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
    }
  },
});

Deno.test("UDP replies of 8,000 bytes to 800 flows: all relayed within the budget, counted beyond it", async () => {
  const target = udpSocket();
  const serving = (async () => {
    const buffer = new Uint8Array(2_048);
    const reply = new Uint8Array(8_000);
    for (;;) {
      try {
        const [, from] = await target.receive(buffer);
        await target.send(reply, from);
      } catch {
        return;
      }
    }
  })();
  const run = async (budget: string) => {
    await using bouncer = await startBouncer(
      `[server]\nbuffer_memory = "${budget}"\n` +
        passRule({
          listen: "127.0.0.1:0",
          target: (target.addr as Deno.NetAddr).port,
          protocol: "udp",
          extra: 'log = ["error"]',
        }),
    );
    const clients = Array.from({ length: 800 }, () => udpSocket());
    try {
      const to = { transport: "udp" as const, hostname: "127.0.0.1", port: bouncer.port() };
      const answered = await Promise.all(clients.map(async (client) => {
        for (let attempt = 0; attempt < 3; attempt++) {
          await client.send(new Uint8Array([1]), to);
          const got = await receiveWithin(client, 1_000);
          if (got) return got.length === 8_000;
        }
        return false;
      }));
      return { answered: answered.filter((a) => a).length, bouncer };
    } finally {
      for (const client of clients) client.close();
    }
  };
  try {
    assertEquals((await run("128MiB")).answered, 800);
    const small = await run("4MiB");
    assert(small.answered < 800, "a 4 MiB budget cannot hold 800 flows' 64 KiB buffers");
    await small.bouncer.log.waitFor({
      event: "error",
      error: /budget \(buffer_memory\) was spent/,
    });
  } finally {
    target.close();
    await serving;
  }
});

Deno.test("rule files that are not files, too large, or odd give a located error, never a hang", async () => {
  await using dir = await tempDir();
  const fifo = `${dir}/fifo`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  for (
    const [path, expected] of [
      ["/dev/zero", "it is not a regular file"],
      [fifo, "it is not a regular file"],
      [dir, "it is not a regular file"],
    ]
  ) {
    const { code, stderr } = await runCli(["check", "-c", path]);
    assertEquals(code, 2, stderr);
    assertIncludes(stderr, `${path}: cannot read the rule file: ${expected}`);
  }
  await Deno.writeFile(`${dir}/huge.toml`, new Uint8Array(5 * 1024 * 1024).fill(0x23)); // "#"
  const huge = await runCli(["check", "-c", `${dir}/huge.toml`]);
  assertEquals(huge.code, 2);
  assertIncludes(huge.stderr, "at most 4194304 are read");
  await Deno.writeFile(
    `${dir}/latin1.toml`,
    new TextEncoder().encode('# ok\nname = "caf\u0000"\n').map((b) => b === 0 ? 0xe9 : b),
  );
  const latin1 = await runCli(["check", "-c", `${dir}/latin1.toml`]);
  assertIncludes(latin1.stderr, `${dir}/latin1.toml:2:12: the rule file is not valid UTF-8`);
  await Deno.writeTextFile(`${dir}/long.toml`, `x = "${"a".repeat(1_000_000)}\n`);
  const long = await runCli(["check", "-c", `${dir}/long.toml`]);
  assertEquals(long.code, 2);
  assert(long.stderr.length < 2_000, `a 1 MB line made ${long.stderr.length} bytes of message`);
});

Deno.test("check prints a table of 131,070 listeners without overflowing the stack", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/all.toml`,
    `[[rule]]\nprotocol = ["tcp", "udp"]\nlisten = "127.0.0.1:1-65535"\nbounce_to = "backend.invalid:80"\n`,
  );
  const { code, stdout, stderr } = await runCli(["check", "-c", `${dir}/all.toml`]);
  assertEquals(code, 0, stderr);
  assertIncludes(stdout, "OK, 1 rule, 131070 listeners");
  // And it says, before run meets it, that no usual descriptor limit holds them.
  assertIncludes(stdout, "needs 131095 open files before any session");
  assertIncludes(stderr, "more than 65536 (the systemd unit's LimitNOFILE)");
});

Deno.test("a value with a newline cannot forge a line in the text log", async () => {
  await using target = tcpServer(echo);
  const good = passRule({ listen: "127.0.0.1:0", target: target.port });
  await using bouncer = await startBouncer(good, ["--log-format", "text"]);
  const forged = "2026-01-01T00:00:00.000Z INFO pass(admin) tcp connect 10.0.0.1:1 -> 10.0.0.2:22";
  await Deno.writeTextFile(
    `${bouncer.dir}/rules.toml`,
    good + `[[rule]]\nname = "x"\nlisten = "127.0.0.1:1\\n${forged}"\nbounce_to = "127.0.0.1:2"\n`,
  );
  bouncer.signal("SIGHUP");
  await bouncer.waitForLine(/reload failed/);
  assert(
    !bouncer.lines().some((line) => line.startsWith("2026-01-01")),
    bouncer.lines().join("\n"),
  );
  assert(bouncer.lines().some((line) => line.includes("\\u000a2026-01-01")));
});
