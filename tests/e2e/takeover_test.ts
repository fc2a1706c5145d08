/**
 * `run --takeover`: a new instance replaces a running one without refusing a
 * client. On loopback: the refusals (no instance, a dead or foreign pid, a bad
 * rule file, a listener it cannot bind, a second start without --takeover),
 * and a session that spans the takeover. In a network namespace this test
 * makes (root only), with `net.ipv4.tcp_migrate_req` 0 and 1: client loops
 * opening connections and sending datagrams the whole time, counting what was
 * refused and lost.
 */
import { fileURLToPath } from "node:url";
import { assert, assertEquals, assertMatch } from "../assert.ts";
import {
  type Bouncer,
  delay,
  echo,
  freePortRange,
  hashUntilEof,
  portbounceCommand,
  portIsFree,
  randomBytes,
  runCli,
  sha256,
  startBouncer,
  startPortbounce,
  tcpServer,
  tempDir,
  TEST_ISOLATES,
  writeAll,
} from "./helpers.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/takeover/", import.meta.url));

function rules(dir: string, port: number, target: number, extra = ""): string {
  return `[server]
pid_file = "${dir}/portbounce.pid"
drain_timeout = "20s"
${extra}
[[rule]]
name = "web"
listen = "127.0.0.1:${port}"
bounce_to = "127.0.0.1:${target}"
`;
}

/** The process id in DIR/portbounce.pid. */
async function pidInFile(dir: string): Promise<number> {
  return Number((await Deno.readTextFile(`${dir}/portbounce.pid`)).trim());
}

async function startIn(dir: string, name: string, args: string[] = []): Promise<Bouncer> {
  const own = `${dir}/${name}`;
  await Deno.mkdir(own);
  return await startPortbounce(["run", "-c", `${dir}/rules.toml`, ...args], own);
}

async function roundTrip(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode("ping"));
    const buffer = new Uint8Array(4);
    const n = await conn.read(buffer);
    conn.close();
    return n === 4;
  } catch {
    return false;
  }
}

Deno.test("--takeover with no instance running starts as usual and says so", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  await using bouncer = await startIn(dir, "a", ["--takeover"]);
  await bouncer.waitForLine(
    /no running instance to take over \(no pid file at .*portbounce\.pid\); starting/,
  );
  assert(await roundTrip(port));
  assertEquals(await pidInFile(dir), bouncer.process.pid);
});

Deno.test("--takeover without a pid file is a usage error", async () => {
  await using dir = await tempDir();
  const port = freePortRange(1);
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:9"\n`,
  );
  const result = await runCli(["run", "-c", `${dir}/rules.toml`, "--takeover"]);
  assertEquals(result.code, 2);
  assertMatch(result.stderr, /--takeover finds the running instance by its pid file/);
  assert(portIsFree(port));
});

Deno.test("--takeover refuses a pid file naming a foreign process, binding nothing; a dead one's is no obstacle", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  // Foreign: a live process (this test) that has no hand-over socket.
  await Deno.writeTextFile(`${dir}/portbounce.pid`, `${Deno.pid}\n`);
  let result = await runCli(["run", "-c", `${dir}/rules.toml`, "--takeover"]);
  assertEquals(result.code, 1);
  assertMatch(
    result.stderr,
    new RegExp(
      `takeover refused: process ${Deno.pid} .* does not answer at .*portbounce\\.pid\\.${Deno.pid}\\.sock: it is not a portbounce that can hand over.*nothing was started`,
    ),
  );
  assert(portIsFree(port));
  // Garbage in the pid file.
  await Deno.writeTextFile(`${dir}/portbounce.pid`, "not a pid\n");
  result = await runCli(["run", "-c", `${dir}/rules.toml`, "--takeover"]);
  assertEquals(result.code, 1);
  assertMatch(result.stderr, /the pid file .* holds no process id/);
  assert(portIsFree(port));
  // Dead: an instance killed outright leaves its pid file and socket behind. Refusing would
  // turn every crash into an outage under a supervisor that restarts with --takeover.
  await Deno.remove(`${dir}/portbounce.pid`);
  const killed = await startIn(dir, "a");
  const deadPid = killed.process.pid;
  killed.signal("SIGKILL");
  await killed.exited();
  await killed[Symbol.asyncDispose]();
  await Deno.stat(`${dir}/portbounce.pid.${deadPid}.sock`);
  await using again = await startIn(dir, "b", ["--takeover"]);
  await again.waitForLine(
    new RegExp(`no running instance to take over \\(process ${deadPid} .* is not running`),
  );
  assert(await roundTrip(port));
  assertEquals(await pidInFile(dir), again.process.pid);
  assertEquals(await Deno.stat(`${dir}/portbounce.pid.${deadPid}.sock`).catch(() => null), null);
});

Deno.test("a takeover binds beside only the ports the running instance holds", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  await using running = await startIn(dir, "a");
  // Another instance (its own pid file) holds a second port, bound to be shared.
  await Deno.mkdir(`${dir}/other`);
  const otherPort = freePortRange(1);
  await Deno.writeTextFile(
    `${dir}/other/rules.toml`,
    rules(`${dir}/other`, otherPort, target.port),
  );
  await using other = await startIn(`${dir}/other`, "x");
  // The takeover's rule file names that port too, by mistake: refused, not shared.
  await Deno.writeTextFile(
    `${dir}/more.toml`,
    rules(dir, port, target.port) +
      `[[rule]]\nname = "theirs"\nlisten = "127.0.0.1:${otherPort}"\nbounce_to = "127.0.0.1:9"\n`,
  );
  const result = await runCli(["run", "-c", `${dir}/more.toml`, "--takeover"]);
  assertEquals(result.code, 3, result.stderr);
  assertMatch(
    result.stderr,
    new RegExp(`cannot bind tcp 127\\.0\\.0\\.1:${otherPort}: address already in use`),
  );
  await running.waitForLine(/takeover by process \d+ abandoned/);
  assert(await roundTrip(port));
  assert(await roundTrip(otherPort));
  assertEquals(other.lines().some((l) => /takeover/.test(l)), false);
});

Deno.test("without a pid file nothing can bind beside portbounce's listeners", async () => {
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await using bouncer = await startBouncer(
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n`,
  );
  // SO_REUSEPORT only where a takeover or workers need it.
  let joined = false;
  try {
    Deno.listen({ hostname: "127.0.0.1", port, reusePort: true }).close();
    joined = true;
  } catch (error) {
    assert(error instanceof Deno.errors.AddrInUse, String(error));
  }
  assertEquals(joined, TEST_ISOLATES > 1, "joinable only with workers");
  assert(await roundTrip(port));
  bouncer.signal("SIGTERM");
  assertEquals((await bouncer.exited()).code, 0);
});

Deno.test("while an instance drains after SIGTERM a plain start runs beside it, and --takeover takes it over", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  const statusPort = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  const holdSession = async () => {
    const session = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(session, new TextEncoder().encode("x"));
    await session.read(new Uint8Array(1));
    return session;
  };
  const old = await startIn(dir, "a");
  try {
    // A session keeps it draining (drain_timeout 20s).
    const session = await holdSession();
    old.signal("SIGTERM");
    await old.waitForLine(/stopping; sessions may drain/);
    await using plain = await startIn(dir, "b");
    assert(await roundTrip(port));
    assertEquals(await pidInFile(dir), plain.process.pid);
    session.close();
    assertEquals((await old.exited()).code, 0);
    // The old instance left the new one's pid file alone.
    assertEquals(await pidInFile(dir), plain.process.pid);
    plain.signal("SIGTERM");
    assertEquals((await plain.exited()).code, 0);
  } finally {
    await old[Symbol.asyncDispose]();
  }
  // A draining instance with a status endpoint: a takeover has it let go.
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    rules(dir, port, target.port, `status = "127.0.0.1:${statusPort}"`),
  );
  await using draining = await startIn(dir, "c");
  const session = await holdSession();
  draining.signal("SIGTERM");
  await draining.waitForLine(/stopping; sessions may drain/);
  await using next = await startIn(dir, "d", ["--takeover"]);
  await next.waitForLine(new RegExp(`took over from process ${draining.process.pid}`));
  assertEquals(next.ready.status, `127.0.0.1:${statusPort}`);
  assert(await roundTrip(port));
  session.close();
  assertEquals((await draining.exited()).code, 0);
});

Deno.test("SIGTERM to the new instance before it asks for the release: the running one carries on", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  await using running = await startIn(dir, "a");
  // Workers make the window between "taking over" and the release a few hundred ms.
  const child = (await portbounceCommand([
    "run",
    "-c",
    `${dir}/rules.toml`,
    "--takeover",
    "--workers",
    "4",
  ])).spawn();
  const lines: string[] = [];
  for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
    lines.push(...chunk.split("\n"));
    if (lines.some((l) => /taking over from process/.test(l))) {
      child.kill("SIGTERM");
      break;
    }
  }
  const status = await child.status;
  assertEquals(status.code, 0, lines.join("\n"));
  await running.waitForLine(/takeover by process \d+ abandoned/);
  assertEquals(running.lines().some((l) => /stopping/.test(l)), false);
  assert(await roundTrip(port));
  assertEquals(await pidInFile(dir), running.process.pid);
});

Deno.test("a start that fails after writing its pid file removes it; a reload that cannot write the ready file does not end the process", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  const result = await runCli([
    "run",
    "-c",
    `${dir}/rules.toml`,
    "--ready-file",
    `${dir}/no/such/dir/ready.json`,
  ]);
  assertEquals(result.code, 1);
  assertMatch(result.stderr, /cannot write the ready file/);
  // No pid file left naming a gone process: a takeover then starts as usual.
  assertEquals(await Deno.stat(`${dir}/portbounce.pid`).catch(() => null), null);
  await Deno.mkdir(`${dir}/ready`);
  const bouncer = await startPortbounce(["run", "-c", `${dir}/rules.toml`], `${dir}/ready`);
  try {
    await Deno.remove(`${dir}/ready`, { recursive: true });
    bouncer.signal("SIGHUP");
    await bouncer.waitForLine(/cannot write the ready file/);
    assert(await roundTrip(port), "still serving after the reload");
    bouncer.signal("SIGTERM");
    assertEquals((await bouncer.exited()).code, 0);
  } finally {
    await bouncer[Symbol.asyncDispose]();
  }
});

Deno.test("a second start beside a running instance is refused, with or without its pid file", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  await using running = await startIn(dir, "a");
  // Same pid file: told which process runs and how to replace it.
  let result = await runCli(["run", "-c", `${dir}/rules.toml`]);
  assertEquals(result.code, 1);
  assertMatch(
    result.stderr,
    new RegExp(
      `portbounce process ${running.process.pid} already runs with the pid file .*--takeover`,
    ),
  );
  // Another pid file, same port: the listeners share ports only for a takeover.
  await Deno.writeTextFile(`${dir}/other.toml`, rules(`${dir}/x`, port, target.port));
  await Deno.mkdir(`${dir}/x`);
  result = await runCli(["run", "-c", `${dir}/other.toml`]);
  assertEquals(result.code, 3);
  assertMatch(result.stderr, /cannot bind tcp 127\.0\.0\.1:\d+: address already in use/);
  // And the status endpoint alone is refused just the same.
  const statusPort = freePortRange(1);
  await Deno.writeTextFile(
    `${dir}/status.toml`,
    `[server]\nstatus = "127.0.0.1:${statusPort}"\n[[rule]]\nname = "w"\nlisten = "127.0.0.1:${
      freePortRange(1)
    }"\nbounce_to = "127.0.0.1:9"\n`,
  );
  const holder = Deno.listen({ hostname: "127.0.0.1", port: statusPort, reusePort: true });
  result = await runCli(["run", "-c", `${dir}/status.toml`]);
  holder.close();
  assertEquals(result.code, 3);
  assertMatch(result.stderr, /cannot bind the status endpoint/);
  assert(await roundTrip(port));
});

Deno.test("a takeover with a bad rule file, or a listener it cannot bind, leaves the running instance untouched", async () => {
  await using dir = await tempDir();
  await using target = tcpServer(echo);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, target.port));
  await using running = await startIn(dir, "a");
  // A bad file: refused before anything is asked of the running instance.
  await Deno.writeTextFile(`${dir}/bad.toml`, rules(dir, port, target.port) + "[[rule]]\n");
  let result = await runCli(["run", "-c", `${dir}/bad.toml`, "--takeover"]);
  assertEquals(result.code, 2);
  // A listener held by another program: the new instance gives up before the release.
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await Deno.writeTextFile(
    `${dir}/held.toml`,
    rules(dir, port, target.port) +
      `[[rule]]\nname = "held"\nlisten = "127.0.0.1:${held.addr.port}"\nbounce_to = "127.0.0.1:9"\n`,
  );
  result = await runCli(["run", "-c", `${dir}/held.toml`, "--takeover"]);
  held.close();
  assertEquals(result.code, 3);
  assertMatch(result.stderr, /cannot bind tcp 127\.0\.0\.1:\d+/);
  await running.waitForLine(/takeover by process \d+ abandoned .*running on unchanged/);
  // Still serving, still the pid file's process, still reachable for a takeover.
  assert(await roundTrip(port));
  assertEquals(await pidInFile(dir), running.process.pid);
  await Deno.stat(`${dir}/portbounce.pid.${running.process.pid}.sock`);
  assertEquals(running.lines().some((l) => /stopping/.test(l)), false);
});

Deno.test("a session that spans a takeover ends whole in the old instance (with workers); the new one serves the rest", async () => {
  await using dir = await tempDir();
  // Counts the bytes, then answers with their hash once the client has finished sending.
  await using target = tcpServer(async (conn) => {
    const { sha256: hash } = await hashUntilEof(conn);
    await writeAll(conn, new TextEncoder().encode(hash));
  });
  await using echoTarget = tcpServer(echo);
  const port = freePortRange(1);
  const echoPort = freePortRange(1);
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    rules(dir, port, target.port) +
      `[[rule]]\nname = "echo"\nlisten = "127.0.0.1:${echoPort}"\nbounce_to = "127.0.0.1:${echoTarget.port}"\n`,
  );
  // The old instance runs workers: each of its isolates lets go of the ports.
  await using old = await startIn(dir, "a", ["--workers", "2"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const data = randomBytes(4 << 20);
  await writeAll(conn, data.subarray(0, 1 << 20));
  await using fresh = await startIn(dir, "b", ["--takeover"]);
  await fresh.waitForLine(new RegExp(`took over from process ${old.process.pid}`));
  // The old instance accepts no more, but its session goes on.
  await writeAll(conn, data.subarray(1 << 20));
  await conn.closeWrite();
  const answer = new Uint8Array(64);
  let got = 0;
  while (got < 64) {
    const n = await conn.read(answer.subarray(got));
    if (n === null) break;
    got += n;
  }
  conn.close();
  assertEquals(new TextDecoder().decode(answer.subarray(0, got)), sha256(data));
  const { code } = await old.exited();
  assertEquals(code, 0);
  assertEquals(old.log.filter({ event: "disconnect", rule: "web" }).length, 1);
  // The files are the new instance's: the old one left them alone.
  assertEquals(await pidInFile(dir), fresh.process.pid);
  await Deno.stat(`${dir}/portbounce.pid.${fresh.process.pid}.sock`);
  assertEquals(
    await Deno.stat(`${dir}/portbounce.pid.${old.process.pid}.sock`).catch(() => null),
    null,
  );
  await Deno.stat(`${fresh.dir}/ready.json`);
  assert(await roundTrip(echoPort));
  await fresh.log.waitFor({ event: "connect", rule: "echo" });
  // And the new instance can be taken over in turn.
  await using third = await startIn(dir, "c", ["--takeover"]);
  await third.waitForLine(new RegExp(`took over from process ${fresh.process.pid}`));
  assertEquals((await fresh.exited()).code, 0);
  assert(await roundTrip(echoPort));
});

Deno.test("a reload that changes workers says it takes a restart", async () => {
  await using dir = await tempDir();
  // --workers on the command line wins over the file: nothing to say.
  const pinned = `${dir}/pinned`;
  await Deno.mkdir(pinned);
  const pinnedPort = freePortRange(1);
  await Deno.writeTextFile(`${pinned}/rules.toml`, rules(pinned, pinnedPort, 9));
  await using withFlag = await startIn(pinned, "a", ["--workers", "1"]);
  await Deno.writeTextFile(`${pinned}/rules.toml`, rules(pinned, pinnedPort, 9, "workers = 2"));
  withFlag.signal("SIGHUP");
  await withFlag.waitForLine(/reload: listeners/);
  assertEquals(withFlag.lines().some((l) => /takes a restart/.test(l)), false);
  const port = freePortRange(1);
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, 9));
  await using bouncer = await startIn(dir, "b");
  await Deno.writeTextFile(`${dir}/rules.toml`, rules(dir, port, 9, "workers = 3"));
  bouncer.signal("SIGHUP");
  await bouncer.waitForLine(
    /workers = 3 takes a restart \(run --takeover .*\); \d isolates? go on/,
  );
});

// --- In a network namespace: what clients see during takeovers ---

const NS = `pbtk${Deno.pid % 10000}`;

async function sh(command: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${command} ${args.join(" ")}: ${text}`);
  return text;
}

async function namespacesAvailable(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "not root";
  try {
    await sh("ip", ["netns", "add", NS]);
    await sh("ip", ["netns", "del", NS]);
    return null;
  } catch (error) {
    return `ip netns unavailable: ${(error as Error).message.split("\n")[0]}`;
  }
}

const noNamespaces = await namespacesAvailable();
if (noNamespaces) console.warn(`takeover namespace test skipped: ${noNamespaces}`);

interface TcpCounts {
  ok: number;
  refused: number;
  reset: number;
  other: number;
  failures: string[];
}
interface UdpCounts {
  sent: number;
  answered: number;
  lost: number;
  longestLossRun: number;
  longestLossMs: number;
}

/** Runs a fixture script inside the namespace; `go()` starts it, `result()` reads its JSON. */
function clientInNs(args: string[]) {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      NS,
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-read",
      "--unstable-net",
      `${FIXTURES}/client_loops.ts`,
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  return {
    async go() {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
    },
    async result<T>(): Promise<T> {
      const { stdout, stderr, success } = await output;
      const text = new TextDecoder().decode(stdout);
      if (!success) throw new Error(`client failed: ${new TextDecoder().decode(stderr)}`);
      return JSON.parse(text.trim().split("\n").at(-1)!) as T;
    },
  };
}

/** Three takeovers in a row while clients connect and send the whole time. */
async function takeoversUnderLoad(migrate: 0 | 1): Promise<{ tcp: TcpCounts; udp: UdpCounts }> {
  await sh("ip", ["netns", "add", NS]);
  try {
    await sh("ip", ["-n", NS, "link", "set", "lo", "up"]);
    await sh("ip", ["netns", "exec", NS, "sysctl", "-qw", `net.ipv4.tcp_migrate_req=${migrate}`]);
    const target = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        NS,
        Deno.execPath(),
        "run",
        "--allow-net",
        "--unstable-net",
        `${FIXTURES}/echo_target.ts`,
        "7000",
        "7001",
        "7002",
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const reader = target.stdout.pipeThrough(new TextDecoderStream()).getReader();
      assertMatch((await reader.read()).value ?? "", /holding 7002/);
      await using dir = await tempDir();
      await Deno.writeTextFile(
        `${dir}/rules.toml`,
        `[server]
pid_file = "${dir}/portbounce.pid"
drain_timeout = "5s"
[[rule]]
name = "web"
listen = "127.0.0.1:8000"
bounce_to = "127.0.0.1:7000"
[[rule]]
name = "dns"
protocol = "udp"
listen = "127.0.0.1:8001"
bounce_to = "127.0.0.1:7001"
`,
      );
      const wrapper = ["ip", "netns", "exec", NS];
      const instances: Bouncer[] = [];
      const start = async (name: string, args: string[]) => {
        await Deno.mkdir(`${dir}/${name}`);
        const started = await startPortbounce(
          ["run", "-c", `${dir}/rules.toml`, ...args],
          `${dir}/${name}`,
          wrapper,
        );
        instances.push(started);
        return started;
      };
      try {
        await start("i0", []);
        const tcp = clientInNs(["tcp", "127.0.0.1", "8000", "4000", "8"]);
        const udp = clientInNs(["udp", "127.0.0.1", "8001", "4000", "1"]);
        await Promise.all([tcp.go(), udp.go()]);
        for (let i = 1; i <= 3; i++) {
          await delay(900);
          const next = await start(`i${i}`, ["--takeover"]);
          await next.waitForLine(/took over from process/);
          if (i === 1) {
            // One that fails late: its workers started and served beside the running
            // instance, then its status endpoint cannot be bound (another program holds it).
            await Deno.writeTextFile(
              `${dir}/fails.toml`,
              (await Deno.readTextFile(`${dir}/rules.toml`)).replace(
                "[server]",
                '[server]\nstatus = "127.0.0.1:7002"\nworkers = 2',
              ),
            );
            const failing = await (await portbounceCommand(
              ["run", "-c", `${dir}/fails.toml`, "--takeover"],
              { wrapper },
            )).output();
            const said = new TextDecoder().decode(failing.stderr);
            assertEquals(failing.code, 3, said);
            assertMatch(said, /cannot bind the status endpoint 127\.0\.0\.1:7002/);
          }
        }
        const result = { tcp: await tcp.result<TcpCounts>(), udp: await udp.result<UdpCounts>() };
        for (const old of instances.slice(0, -1)) assertEquals((await old.exited()).code, 0);
        return result;
      } finally {
        for (const instance of instances) await instance[Symbol.asyncDispose]();
      }
    } finally {
      target.kill("SIGKILL");
      await target.status;
    }
  } finally {
    await sh("ip", ["netns", "del", NS]).catch(() => {});
  }
}

Deno.test({
  name: "takeovers under load: no connection refused with tcp_migrate_req = 1; UDP's gap measured",
  ignore: noNamespaces !== null,
  async fn() {
    const without = await takeoversUnderLoad(0);
    const withMigrate = await takeoversUnderLoad(1);
    console.log(`tcp_migrate_req=0: ${JSON.stringify(without)}`);
    console.log(`tcp_migrate_req=1: ${JSON.stringify(withMigrate)}`);
    for (const { tcp, udp } of [without, withMigrate]) {
      assert(tcp.ok > 100, `connections went through: ${JSON.stringify(tcp)}`);
      assert(udp.answered > 100, `datagrams were answered: ${JSON.stringify(udp)}`);
    }
    const { tcp } = withMigrate;
    assertEquals(
      { refused: tcp.refused, reset: tcp.reset, other: tcp.other },
      { refused: 0, reset: 0, other: 0 },
      tcp.failures.join("\n"),
    );
  },
});
