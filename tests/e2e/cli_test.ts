/**
 * The command line end to end: exit codes, `check`, signals and drain,
 * log files, the ready file.
 */
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import {
  delay,
  echo,
  freePortRange,
  portbounceCommand,
  portIsFree,
  readAll,
  runCli,
  startBouncer,
  tcpServer,
  tempDir,
  waitUntil,
  writeAll,
} from "./helpers.ts";
import { passRule } from "../fixtures/rules.ts";

async function writeRules(dir: string, text: string): Promise<string> {
  const path = `${dir}/rules.toml`;
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("a bad rule file exits 2, names every problem, and binds nothing", async () => {
  await using dir = await tempDir();
  const port = freePortRange(1);
  const path = await writeRules(
    dir,
    `[[rule]]
name = "good"
listen = "127.0.0.1:${port}"
bounce_to = "127.0.0.1:9"

[[rule]]
name = "bad"
listen = "127.0.0.1:${port + 1}"
bounce_to = "127.0.0.1:9"
from = "10.0.0.300/8"
idle_timout = "1s"
`,
  );
  const ready = `${dir}/ready.json`;
  const result = await runCli(["run", "-c", path, "--ready-file", ready]);
  assertEquals(result.code, 2);
  assertIncludes(
    result.stderr,
    `${path}:10: rule "bad" (rule #2): from: client network "10.0.0.300"`,
  );
  assertIncludes(
    result.stderr,
    `${path}:11: rule "bad" (rule #2): idle_timout: unknown key; did you mean "idle_timeout"?`,
  );
  assertIncludes(result.stderr, "2 problems in the rule file; nothing was started");
  assert(portIsFree(port), "the good rule's port must not have been bound");
  assert(!(await Deno.stat(ready).catch(() => null)), "no ready file for a bad rule file");
});

Deno.test("a TOML syntax error exits 2 with file:line:column", async () => {
  await using dir = await tempDir();
  const path = await writeRules(dir, '[[rule]]\nlisten = "127.0.0.1:80\n');
  const result = await runCli(["run", "-c", path]);
  assertEquals(result.code, 2);
  assertMatch(result.stderr, new RegExp(`${path}:2:\\d+: TOML syntax error`));
});

Deno.test("a missing rule file exits 2 and says so", async () => {
  const result = await runCli(["run", "-c", "/nonexistent/rules.toml"]);
  assertEquals(result.code, 2);
  assertIncludes(result.stderr, "/nonexistent/rules.toml: cannot read the rule file: no such file");
});

Deno.test("a file that is not UTF-8 exits 2", async () => {
  await using dir = await tempDir();
  const path = `${dir}/rules.toml`;
  await Deno.writeFile(
    path,
    new Uint8Array([0x6e, 0x61, 0x6d, 0x65, 0x3d, 0x22, 0xff, 0xfe, 0x22, 0x0a]),
  );
  const result = await runCli(["check", "-c", path]);
  assertEquals(result.code, 2);
  assertIncludes(result.stderr, "not valid UTF-8");
});

Deno.test("bind failures exit 3, list every failing address, and leave nothing bound", async () => {
  await using dir = await tempDir();
  const base = freePortRange(3);
  const holders = [
    Deno.listen({ hostname: "127.0.0.1", port: base + 1 }),
    Deno.listen({ hostname: "127.0.0.1", port: base + 2 }),
  ];
  try {
    const path = await writeRules(
      dir,
      `[[rule]]\nlisten = ["127.0.0.1:${base}", "127.0.0.1:${base + 1}", "127.0.0.1:${
        base + 2
      }"]\nbounce_to = "127.0.0.1:9"\n`,
    );
    const result = await runCli(["run", "-c", path, "--ready-file", `${dir}/ready.json`]);
    assertEquals(result.code, 3);
    assertIncludes(result.stderr, `cannot bind tcp 127.0.0.1:${base + 1}: address already in use`);
    assertIncludes(result.stderr, `cannot bind tcp 127.0.0.1:${base + 2}: address already in use`);
    assertIncludes(result.stderr, "2 of 3 listeners could not be bound; none were kept");
    assert(portIsFree(base), "the listener that did bind must have been closed");
    assert(!(await Deno.stat(`${dir}/ready.json`).catch(() => null)));
  } finally {
    for (const holder of holders) holder.close();
  }
});

Deno.test("usage errors exit 2 and point at --help", async () => {
  const unknownOption = await runCli(["run", "--bogus"]);
  assertEquals(unknownOption.code, 2);
  assertIncludes(unknownOption.stderr, "Unknown option '--bogus'");
  assertIncludes(unknownOption.stderr, 'See "portbounce run --help"');
  const unknownCommand = await runCli(["frobnicate"]);
  assertEquals(unknownCommand.code, 2);
  assertIncludes(unknownCommand.stderr, 'unknown command "frobnicate"');
  const badFormat = await runCli(["run", "--log-format", "xml"]);
  assertEquals(badFormat.code, 2);
  assertIncludes(badFormat.stderr, "--log-format must be one of text, json");
});

Deno.test("version and help", async () => {
  const version = await runCli(["version"]);
  assertEquals(version.code, 0);
  assertMatch(version.stdout, /^portbounce \d+\.\d+\.\d+ \(deno /);
  for (const command of ["run", "check"]) {
    const help = await runCli([command, "--help"]);
    assertEquals(help.code, 0);
    assertIncludes(help.stdout, `Usage: portbounce ${command}`);
  }
});

Deno.test("check prints the resolved listener -> target table, and --json", async () => {
  await using dir = await tempDir();
  const path = await writeRules(
    dir,
    `[[rule]]
name = "block-lab"
action = "block"
listen = "127.0.0.1:2222"
from = "127.0.0.2"

[[rule]]
name = "ssh"
listen = ["127.0.0.1:2222", "[::1]:2222"]
bounce_to = "127.0.0.1:22"

[[rule]]
name = "range"
listen = "localhost:8000-8001"
bounce_to = "127.0.0.1:9000-9001"
`,
  );
  const text = await runCli(["check", "-c", path]);
  assertEquals(text.code, 0, text.stderr);
  assertMatch(text.stdout, /^LISTEN\s+PROTO\s+RULE\s+ACTION\s+FROM\s+TARGET$/m);
  assertMatch(
    text.stdout,
    /^127\.0\.0\.1:2222\s+tcp\s+block-lab \(#1\)\s+block\s+127\.0\.0\.2\/32\s+-$/m,
  );
  assertMatch(
    text.stdout,
    /^127\.0\.0\.1:2222\s+tcp\s+ssh \(#2\)\s+pass\s+any\s+127\.0\.0\.1:22$/m,
  );
  assertMatch(text.stdout, /^\[::1\]:2222\s+tcp\s+ssh \(#2\)/m);
  assertMatch(text.stdout, /:8001\s+tcp\s+range \(#3\)\s+pass\s+any\s+127\.0\.0\.1:9001$/m);
  assertIncludes(text.stdout, "OK, 3 rules");

  const json = await runCli(["check", "-c", path, "--json"]);
  assertEquals(json.code, 0);
  const parsed = JSON.parse(json.stdout);
  assertEquals(parsed.ok, true);
  assertEquals(parsed.listeners[0].rules.map((r: { rule: string }) => r.rule), [
    "block-lab",
    "ssh",
  ]);
  assertEquals(parsed.listeners[0].rules[0].target, null);

  const bad = await writeRules(dir, '[[rule]]\nlisten = "127.0.0.1:80"\n');
  const failed = await runCli(["check", "-c", bad, "--json"]);
  assertEquals(failed.code, 2);
  assertIncludes(JSON.parse(failed.stdout).problems[0].message, "a pass rule needs bounce_to");
});

Deno.test("SIGTERM drains: live sessions finish, new ones are refused, exit 0", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[server]\ndrain_timeout = "10s"\n[[rule]]\nname = "r"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  const readyPath = `${bouncer.dir}/ready.json`;
  const live = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await writeAll(live, new TextEncoder().encode("before"));
  await bouncer.log.waitFor({ event: "connect" });
  bouncer.signal("SIGTERM");
  await bouncer.log.waitFor({ message: /^SIGTERM: stopping/ });
  // The listener is closed: a new client is refused.
  const refused = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() }).then(
    (c) => (c.close(), false),
    () => true,
  );
  assert(refused, "new connections must be refused while draining");
  // The live session still relays, then ends on its own.
  await writeAll(live, new TextEncoder().encode(" and after"));
  await live.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(live)), "before and after");
  live.close();
  assertEquals((await bouncer.exited()).code, 0);
  assertEquals(bouncer.log.filter({ event: "disconnect", reason: "client-closed" }).length, 1);
  await bouncer.log.waitFor({
    message: "stopped: 1 session, 16 bytes up, 16 bytes down, 0 errors, 0 blocked",
    sessions: 1,
    bytes_up: 16,
    bytes_down: 16,
    errors: 0,
    blocked: 0,
  });
  assert(!(await Deno.stat(readyPath).catch(() => null)), "the ready file is removed on exit");
});

Deno.test("drain_timeout ends lingering sessions with reason shutdown", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[server]\ndrain_timeout = "500ms"\n[[rule]]\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  const live = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await bouncer.log.waitFor({ event: "connect" });
  const started = performance.now();
  bouncer.signal("SIGINT");
  assertEquals(await live.read(new Uint8Array(1)), null);
  live.close();
  const { code } = await bouncer.exited();
  const waited = performance.now() - started;
  assertEquals(code, 0);
  assert(waited >= 450, `sessions were cut after ${waited} ms, before drain_timeout`);
  assertEquals(bouncer.log.filter({ event: "disconnect", reason: "shutdown" }).length, 1);
});

Deno.test("a second SIGTERM stops at once", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[server]\ndrain_timeout = "1h"\n[[rule]]\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  const live = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await bouncer.log.waitFor({ event: "connect" });
  bouncer.signal("SIGTERM");
  await bouncer.log.waitFor({ message: /^SIGTERM: stopping/ });
  await delay(600); // A repeat within 500 ms would count as the same signal.
  bouncer.signal("SIGTERM");
  const { code } = await bouncer.exited();
  live.close();
  assertEquals(code, 0);
  await bouncer.log.waitFor({ message: /^SIGTERM again: closing 1 sessions? now/ });
  assertEquals(bouncer.log.filter({ event: "disconnect", reason: "shutdown" }).length, 1);
});

Deno.test("one Ctrl-C under deno task (the signal twice within a millisecond) still drains", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[server]\ndrain_timeout = "10s"\n` + passRule({ listen: "127.0.0.1:0", target: target.port }),
  );
  const live = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await writeAll(live, new TextEncoder().encode("held"));
  await bouncer.log.waitFor({ event: "connect" });
  // The terminal signals the process group; deno task passes the signal on again.
  bouncer.signal("SIGINT");
  bouncer.signal("SIGINT");
  await bouncer.log.waitFor({ message: /^SIGINT: stopping/ });
  await delay(300);
  await live.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(live)), "held", "the session drained");
  live.close();
  assertEquals((await bouncer.exited()).code, 0);
  assertEquals(bouncer.log.filter({ event: "disconnect", reason: "client-closed" }).length, 1);
});

Deno.test("log to a file, reopened on SIGHUP (logrotate)", async () => {
  await using target = tcpServer(echo);
  await using dir = await tempDir();
  const logPath = `${dir}/portbounce.log`;
  await using bouncer = await startBouncer(
    `[server]\nlog = ["${logPath}", "stderr"]\n[[rule]]\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  const exchange = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
    await conn.closeWrite();
    await readAll(conn);
    conn.close();
  };
  await exchange();
  await bouncer.log.waitFor({ event: "disconnect" });
  assertMatch(await Deno.readTextFile(logPath), /"event":"disconnect"/);
  // logrotate moves the file away, then sends SIGHUP.
  await Deno.rename(logPath, `${logPath}.1`);
  bouncer.signal("SIGHUP");
  await bouncer.log.waitFor({ message: /^reload: listeners/ });
  await exchange();
  await waitUntil(
    async () => /"event":"disconnect"/.test(await Deno.readTextFile(logPath).catch(() => "")),
    "the disconnect line in the new log file",
  );
  assertMatch(await Deno.readTextFile(`${logPath}.1`), /"event":"disconnect"/);
});

Deno.test("SIGUSR2 writes the counters to the log", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  await writeAll(conn, new TextEncoder().encode("abc"));
  await conn.closeWrite();
  await readAll(conn);
  conn.close();
  await bouncer.log.waitFor({ event: "disconnect" });
  bouncer.signal("SIGUSR2");
  await bouncer.log.waitFor({
    kind: "rule",
    name: "web",
    active: 0,
    total: 1,
    up: 3,
    down: 3,
    errors: 0,
    blocked: "0",
    dropped: "0",
    lastClient: /^127\.0\.0\.1:\d+$/,
  });
});

Deno.test("the ready file lists the addresses actually bound", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[[rule]]\nlisten = ["127.0.0.1:0", "[::1]:0"]\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  const [v4, v6] = bouncer.ready.listeners;
  assertEquals(bouncer.ready.pid, bouncer.process.pid);
  assertEquals(v4.key, "tcp 127.0.0.1:0");
  assertEquals(v4.address, `127.0.0.1:${v4.port}`);
  assertEquals(v6.address, `[::1]:${v6.port}`);
  assert(v4.port > 0 && v6.port > 0);
  // Connectable as soon as the file exists.
  const conn = await Deno.connect({ hostname: "::1", port: v6.port });
  await conn.closeWrite();
  await readAll(conn);
  conn.close();
});

Deno.test("a signal the moment the ready file appears is handled (the file means signals work)", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    `[[rule]]\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:9"\n`,
  );
  for (const signal of ["SIGHUP", "SIGTERM", "SIGHUP", "SIGTERM", "SIGHUP", "SIGTERM"] as const) {
    const ready = `${dir}/ready-${signal}.json`;
    const child = (await portbounceCommand(
      ["run", "-c", `${dir}/rules.toml`, "--ready-file", ready],
      { stdout: "null" },
    )).spawn();
    while (!(await Deno.stat(ready).catch(() => null))) await delay(1);
    child.kill(signal);
    if (signal === "SIGHUP") {
      await delay(200);
      child.kill("SIGTERM");
    }
    const { code, stderr } = await child.output();
    const log = new TextDecoder().decode(stderr);
    assertEquals(code, 0, `${signal} at ready: exit ${code}\n${log}`);
    assertMatch(log, /stopped: /);
    assertEquals(await Deno.stat(ready).catch(() => null), null, "the ready file is removed");
  }
});

Deno.test("--exit-after 0 is a usage error", async () => {
  const { code, stderr } = await runCli([
    "forward",
    "--exit-after",
    "0",
    "127.0.0.1:0=127.0.0.1:9",
  ]);
  assertEquals(code, 2);
  assertIncludes(stderr, "--exit-after: must be more than 0");
});
