/**
 * `source`: the address outgoing traffic leaves from, as the target sees it,
 * for TCP (through node:net, which can bind one) and UDP, IPv4 on loopback
 * and IPv6 inside a network namespace the test builds; and the `connect`
 * event names the local address used.
 */
import { assertEquals, assertMatch } from "../assert.ts";
import { fileURLToPath } from "node:url";
import { passRule } from "../fixtures/rules.ts";
import {
  delay,
  echo,
  exchange,
  readAll,
  receiveWithin,
  runCli,
  startBouncer,
  tcpServer,
  tempDir,
  udpEcho,
  udpSocket,
  waitUntil,
  writeAll,
} from "./helpers.ts";

Deno.test("source = an address: TCP and UDP targets see it; connect events name it", async () => {
  await using tcp = tcpServer(echo);
  await using udp = udpEcho();
  await using bouncer = await startBouncer(
    passRule({ listen: "127.0.0.1:0", target: tcp.port, extra: 'source = "127.0.0.5"' }) +
      passRule({
        listen: "127.0.0.1:0",
        target: udp.port,
        protocol: "udp",
        extra: 'source = "127.0.0.6"',
      }),
  );
  assertEquals(await exchange(bouncer.port(0), "via .5"), "via .5");
  assertEquals(tcp.clients, ["127.0.0.5"]);
  const connect = await bouncer.log.waitFor({ event: "connect", protocol: "tcp" });
  assertMatch(connect.local as string, /^127\.0\.0\.5:\d+$/);
  const client = udpSocket();
  try {
    await client.send(new Uint8Array([7]), {
      transport: "udp",
      hostname: "127.0.0.1",
      port: bouncer.port(1),
    });
    assertEquals((await receiveWithin(client, 1_000))?.[0], 7);
  } finally {
    client.close();
  }
  const udpConnect = await bouncer.log.waitFor({ event: "connect", protocol: "udp" });
  assertMatch(udpConnect.local as string, /^127\.0\.0\.6:\d+$/);
});

Deno.test("source through node:net keeps half-close and backpressure: 8 MiB each way, intact", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    passRule({ listen: "127.0.0.1:0", target: target.port, extra: 'source = "127.0.0.5"' }),
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bouncer.port() });
  const data = new Uint8Array(8 * 1024 * 1024).map((_, i) => i % 251);
  const [, got] = await Promise.all([
    writeAll(conn, data).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  conn.close();
  assertEquals(got.length, data.length);
  assertEquals(got.every((b, i) => b === i % 251), true);
  await bouncer.log.waitFor({ event: "disconnect", reason: "client-closed" });
});

Deno.test("a client's reset reaches the target as a reset when the target side is a node:net socket", async () => {
  const saw = Promise.withResolvers<string>();
  await using target = tcpServer(async (conn) => {
    try {
      for (;;) {
        if ((await conn.read(new Uint8Array(1024))) === null) return saw.resolve("end of stream");
      }
    } catch (error) {
      saw.resolve((error as Error).name);
    }
  });
  await using bouncer = await startBouncer(
    passRule({ listen: "127.0.0.1:0", target: target.port, extra: 'source = "127.0.0.5"' }),
  );
  const net = (await import("node:net")).default;
  const socket = net.connect({ host: "127.0.0.1", port: bouncer.port() });
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.write("hello");
  await bouncer.log.waitFor({ event: "connect" });
  await delay(100);
  socket.resetAndDestroy();
  assertEquals(await saw.promise, "ConnectionReset");
});

const root = Deno.uid() === 0;
const ip = await new Deno.Command("ip", { args: ["-V"], stdout: "null", stderr: "null" }).output()
  .then((o) => o.success, () => false);

Deno.test({
  name: "source = an IPv6 address: TCP and UDP targets see it (inside a network namespace)",
  ignore: !root || !ip,
  async fn() {
    const ns = `pbsrc${Deno.pid}`;
    const run = async (args: string[]) => {
      const out = await new Deno.Command("ip", { args }).output();
      if (!out.success) {
        throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
      }
    };
    await run(["netns", "add", ns]);
    try {
      await run(["-n", ns, "link", "set", "lo", "up"]);
      for (const address of ["2001:db8::5/128", "2001:db8::10/128"]) {
        await run(["-n", ns, "addr", "add", address, "dev", "lo", "nodad"]);
      }
      const fixture = fileURLToPath(new URL("../fixtures/source_v6.ts", import.meta.url));
      const out = await new Deno.Command("ip", {
        args: ["netns", "exec", ns, Deno.execPath(), "run", "-A", "--unstable-net", fixture],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      const seen = JSON.parse(stdout.trim().split("\n").pop()!);
      assertEquals([seen.tcp, seen.udp], ["2001:db8::5", "2001:db8::5"]);
      for (const local of seen.connects) assertMatch(local, /^\[2001:db8::5\]:\d+$/);
    } finally {
      await run(["netns", "del", ns]).catch(() => {});
    }
  },
});

Deno.test("without source, a UDP flow to a loopback target binds loopback, not every interface", async () => {
  await using udp = udpEcho();
  await using bouncer = await startBouncer(
    passRule({ listen: "127.0.0.1:0", target: udp.port, protocol: "udp" }),
  );
  const client = udpSocket();
  try {
    await client.send(new Uint8Array([7]), {
      transport: "udp",
      hostname: "127.0.0.1",
      port: bouncer.port(),
    });
    assertEquals((await receiveWithin(client, 1_000))?.[0], 7);
  } finally {
    client.close();
  }
  const connect = await bouncer.log.waitFor({ event: "connect", protocol: "udp" });
  assertMatch(connect.local as string, /^127\.0\.0\.1:\d+$/);
});

Deno.test("check --probe connects as a session would: from the rule's source, with its PROXY header", async () => {
  const heads: string[] = [];
  await using target = tcpServer(async (conn) => {
    const buffer = new Uint8Array(64);
    const n = await conn.read(buffer);
    heads.push(n === null ? "" : new TextDecoder().decode(buffer.subarray(0, n)));
  });
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    passRule({ listen: "127.0.0.1:0", target: target.port, extra: 'source = "127.0.0.5"' }) +
      passRule({
        name: "proxied",
        listen: "127.0.0.1:0",
        target: target.port,
        extra: 'proxy_protocol = "v1"\nsource = "127.0.0.6"',
      }),
  );
  const { code, stdout } = await runCli(["check", "-c", `${dir}/rules.toml`, "--probe"]);
  assertEquals(code, 0, stdout);
  await waitUntil(() => target.clients.length >= 2, "both probes seen by the target", {
    state: () => target.clients,
  });
  assertEquals(target.clients.toSorted(), ["127.0.0.5", "127.0.0.6"]);
  // The PROXY rule's probe says it relays no client; the other sends nothing.
  assertEquals(heads.toSorted(), ["", "PROXY UNKNOWN\r\n"]);
});
