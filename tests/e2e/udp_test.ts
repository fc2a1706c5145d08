/**
 * The UDP relay end to end: per-client sessions, reply routing, idle expiry,
 * limits, floods, and a real client pair (iperf3 -u) through a tcp+udp rule.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import {
  delay,
  echo,
  freePortRange,
  portOf,
  randomBytes,
  readAll,
  receiveWithin,
  sha256,
  startBouncer,
  tcpServer,
  udpEcho,
  udpRoundTrip,
  udpSocket,
  writeAll,
} from "./helpers.ts";
import { waitForListen } from "../../bench/measure.ts";
import { passRule } from "../fixtures/rules.ts";

function udpRule(listen: string, target: string, extra = ""): string {
  return passRule({ listen, target, extra, protocol: "udp" });
}

/**
 * One client: sends `count` datagrams of random sizes, each waiting for its
 * echo; resends on loss. Fails on any reply that is not one it sent.
 */
async function udpClient(host: string, port: number, count: number, maxSize: number) {
  const socket = udpSocket(host);
  const target = { transport: "udp" as const, hostname: host, port };
  const sent = new Set<string>();
  let resends = 0;
  let receiving: Promise<[Uint8Array, Deno.Addr]> | undefined;
  try {
    for (let i = 0; i < count; i++) {
      const datagram = randomBytes(1 + Math.floor(Math.random() * maxSize));
      const hash = sha256(datagram);
      sent.add(hash);
      await socket.send(datagram, target);
      for (;;) {
        receiving ??= socket.receive(new Uint8Array(65_536));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const reply = await Promise.race([
          receiving,
          new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 1_000)),
        ]);
        clearTimeout(timer);
        if (reply === null) {
          resends++;
          await socket.send(datagram, target);
          continue;
        }
        receiving = undefined;
        const replyHash = sha256(reply[0]);
        if (replyHash === hash) break;
        // A late echo of an earlier resend is a duplicate; anything else is misrouted or corrupt.
        if (!sent.has(replyHash)) {
          throw new Error(`reply of ${reply[0].length} bytes was never sent by this client`);
        }
      }
    }
    return { resends, port: portOf(socket) };
  } finally {
    socket.close();
    receiving?.catch(() => {});
  }
}

Deno.test("50 clients x 200 datagrams of 1..65,507 bytes: every reply intact and routed to its client", async () => {
  await using target = udpEcho();
  await using bouncer = await startBouncer(
    udpRule("127.0.0.1:0", `127.0.0.1:${target.port}`, 'log = ["error"]'),
  );
  const started = performance.now();
  const results = await Promise.all(
    Array.from({ length: 50 }, () => udpClient("127.0.0.1", bouncer.port(), 200, 65_507)),
  );
  const seconds = (performance.now() - started) / 1000;
  const resends = results.reduce((sum, r) => sum + r.resends, 0);
  console.log(
    `    10,000 datagrams echoed in ${seconds.toFixed(1)} s, ${resends} resent after loss`,
  );
  assertEquals(bouncer.log.filter({ event: "error" }), []);
});

Deno.test("IPv6: 10 clients x 50 datagrams up to 65,487 bytes over ::1", async () => {
  await using target = udpEcho("::1");
  await using bouncer = await startBouncer(udpRule("[::1]:0", `[::1]:${target.port}`));
  const results = await Promise.all(
    Array.from({ length: 10 }, () => udpClient("::1", bouncer.port(), 50, 65_487)),
  );
  assertEquals(results.length, 10);
  const connect = await bouncer.log.waitFor({ event: "connect", rule: "u", protocol: "udp" });
  for (const field of ["client", "listen", "target"]) {
    assertMatch(connect[field] as string, /^\[::1\]:\d+$/);
  }
});

Deno.test("idle expiry logs datagrams and bytes each way; traffic refreshes the session", async () => {
  await using target = udpEcho();
  await using bouncer = await startBouncer(
    udpRule("127.0.0.1:0", `127.0.0.1:${target.port}`, 'udp_idle_timeout = "600ms"'),
  );
  const client = udpSocket();
  try {
    // Traffic every 200 ms for 1.6 s keeps one session alive past the limit.
    for (let i = 0; i < 8; i++) {
      assert(await udpRoundTrip(client, bouncer.port(), new Uint8Array([i])));
      await delay(200);
    }
    assertEquals(bouncer.log.filter({ event: "disconnect" }), []);
    assertEquals(bouncer.log.filter({ event: "connect" }).length, 1);
    await bouncer.log.waitFor({
      event: "disconnect",
      bytes_up: 8,
      bytes_down: 8,
      datagrams_up: 8,
      datagrams_down: 8,
      reason: "idle-timeout",
    });
    // The same client after expiry is a new session.
    assert(await udpRoundTrip(client, bouncer.port(), new Uint8Array([1])));
    assertEquals(bouncer.log.filter({ event: "connect" }).length, 2);
  } finally {
    client.close();
  }
});

Deno.test("replies from an address other than the target are dropped and counted", async () => {
  await using target = udpEcho();
  const impostor = udpSocket();
  await using bouncer = await startBouncer(
    udpRule("127.0.0.1:0", `127.0.0.1:${target.port}`),
  );
  const client = udpSocket();
  try {
    target.replyFrom(impostor);
    assertEquals(await udpRoundTrip(client, bouncer.port(), "who", { ms: 500 }), null);
    target.replyFrom(target.socket);
    assertEquals(await udpRoundTrip(client, bouncer.port(), "me"), "me");
    bouncer.signal("SIGUSR2");
    await bouncer.log.waitFor({ kind: "rule", name: "u", dropped: "not-from-target=1" });
  } finally {
    client.close();
    impostor.close();
  }
});

Deno.test("UDP limits: max_sessions and max_sessions_per_client drop datagrams with a block naming the limit", async () => {
  await using target = udpEcho();
  await using bouncer = await startBouncer(`
[[rule]]
name = "one-per-client"
protocol = "udp"
listen = "127.0.0.1:0"
from = "127.0.0.1/32"
bounce_to = "127.0.0.1:${target.port}"
max_sessions_per_client = 1

[[rule]]
name = "two-total"
protocol = "udp"
listen = "127.0.0.1:0"
from = "127.0.0.0/8"
bounce_to = "127.0.0.1:${target.port}"
max_sessions = 2
`);
  const port = bouncer.port();
  const sockets = [
    udpSocket(),
    udpSocket(),
    udpSocket("127.0.0.2"),
    udpSocket("127.0.0.3"),
    udpSocket("127.0.0.4"),
  ];
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  try {
    const answers = [];
    for (const socket of sockets) {
      await socket.send(new Uint8Array([1]), to);
      answers.push((await receiveWithin(socket, 500)) !== null);
    }
    // .1 first socket passes; .1 second socket is over its per-client limit; .2 and .3 fill
    // two-total; .4 is over max_sessions.
    assertEquals(answers, [true, false, true, true, false]);
    await bouncer.log.waitFor({
      event: "block",
      rule: "one-per-client",
      client: /^127\.0\.0\.1:\d+$/,
      reason: "max_sessions_per_client",
    });
    await bouncer.log.waitFor({
      event: "block",
      rule: "two-total",
      client: /^127\.0\.0\.4:\d+$/,
      reason: "max_sessions",
    });
  } finally {
    for (const socket of sockets) socket.close();
  }
});

Deno.test("a blocked flood from many ports is logged once per client and does not grow memory", async () => {
  await using target = udpEcho();
  await using bouncer = await startBouncer(`
[[rule]]
name = "nobody"
protocol = "udp"
action = "block"
listen = "127.0.0.1:0"
from = "127.0.0.0/8"
`);
  const rss = async () =>
    Number(
      /VmRSS:\s+(\d+)/.exec(await Deno.readTextFile(`/proc/${bouncer.process.pid}/status`))![1],
    );
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port: bouncer.port() };
  const flood = async (rounds: number) => {
    for (let round = 0; round < rounds; round++) {
      const sockets = Array.from({ length: 50 }, () => udpSocket());
      for (const socket of sockets) {
        for (let i = 0; i < 20; i++) await socket.send(new Uint8Array(512), to);
      }
      for (const socket of sockets) socket.close();
    }
  };
  await flood(4); // warm up
  await delay(300);
  const before = await rss();
  await flood(20); // 20,000 datagrams from 1,000 source ports
  await delay(300);
  const after = await rss();
  const blocks = bouncer.log.filter({ event: "block" });
  assertEquals(blocks.length, 1, "one client address, one block line per minute");
  assertEquals(blocks[0].reason, "rule");
  assert(after - before < 16 * 1024, `RSS grew by ${after - before} KiB under a blocked flood`);
  assertEquals(target.port > 0, true);
});

Deno.test("a TCP and a UDP rule on the same port work side by side", async () => {
  await using udpTarget = udpEcho();
  await using tcpTarget = tcpServer(echo);
  const port = freePortRange(1);
  await using bouncer = await startBouncer(`
[[rule]]
name = "tcp-side"
listen = "127.0.0.1:${port}"
bounce_to = "127.0.0.1:${tcpTarget.port}"

[[rule]]
name = "udp-side"
protocol = "udp"
listen = "127.0.0.1:${port}"
bounce_to = "127.0.0.1:${udpTarget.port}"
`);
  assertEquals(bouncer.ready.listeners.map((l) => l.key), [
    `tcp 127.0.0.1:${port}`,
    `udp 127.0.0.1:${port}`,
  ]);
  const client = udpSocket();
  try {
    await client.send(new TextEncoder().encode("datagram"), {
      transport: "udp",
      hostname: "127.0.0.1",
      port,
    });
    assertEquals(new TextDecoder().decode((await receiveWithin(client, 1_000))!), "datagram");
  } finally {
    client.close();
  }
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new TextEncoder().encode("stream"));
  await conn.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(conn)), "stream");
  conn.close();
});

Deno.test("SIGTERM: UDP sessions drain, then end with reason shutdown", async () => {
  await using target = udpEcho();
  await using bouncer = await startBouncer(
    `[server]\ndrain_timeout = "400ms"\n` + udpRule("127.0.0.1:0", `127.0.0.1:${target.port}`),
  );
  const client = udpSocket();
  try {
    assert(await udpRoundTrip(client, bouncer.port(), "1"));
    bouncer.signal("SIGTERM");
    await bouncer.log.waitFor({ message: /SIGTERM: stopping/ });
    // Still relayed while draining.
    assert(await udpRoundTrip(client, bouncer.port(), "2"));
    assertEquals((await bouncer.exited()).code, 0);
    assertEquals(
      bouncer.log.filter({
        event: "disconnect",
        datagrams_up: 2,
        datagrams_down: 2,
        reason: "shutdown",
      }).length,
      1,
    );
  } finally {
    client.close();
  }
});

const iperf3 = await new Deno.Command("iperf3", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success, () => false);

Deno.test({
  name: 'iperf3 -u through a ["tcp", "udp"] rule: control over TCP, data over UDP, loss reported',
  ignore: !iperf3,
  async fn() {
    const serverPort = freePortRange(1);
    const server = new Deno.Command("iperf3", {
      args: ["-s", "-1", "-B", "127.0.0.1", "-p", String(serverPort)],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const listenPort = freePortRange(1);
      await using bouncer = await startBouncer(`
[[rule]]
name = "iperf"
protocol = ["tcp", "udp"]
listen = "127.0.0.1:${listenPort}"
bounce_to = "127.0.0.1:${serverPort}"
`);
      // Read from /proc, not probed: a probe would be iperf3's one client (-1).
      await waitForListen(serverPort, 5_000);
      const client = await new Deno.Command("iperf3", {
        args: [
          "-c",
          "127.0.0.1",
          "-p",
          String(listenPort),
          "-u",
          "-b",
          "50M",
          "-l",
          "1400",
          "-t",
          "2",
          "--json",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const report = JSON.parse(new TextDecoder().decode(client.stdout));
      assertEquals(client.code, 0, JSON.stringify(report.error ?? ""));
      const sum = report.end.sum;
      console.log(
        `    iperf3 -u 50 Mbit/s x 1400 B through portbounce: ${sum.packets} datagrams, ${sum.lost_packets} lost (${
          sum.lost_percent.toFixed(2)
        }%)`,
      );
      assert(sum.packets > 1_000, `only ${sum.packets} datagrams were sent`);
      assert(sum.lost_percent < 5, `lost ${sum.lost_percent}%`);
      await bouncer.log.waitFor({ event: "connect", rule: "iperf", protocol: "tcp" });
      await bouncer.log.waitFor({ event: "connect", rule: "iperf", protocol: "udp" });
    } finally {
      try {
        server.kill("SIGKILL");
      } catch {
        // Already exited after its one test.
      }
      await server.status;
    }
  },
});

if (!iperf3) {
  console.warn("iperf3 is not installed: the iperf3 test is skipped (apt-get install iperf3)");
}

Deno.test("the first flow after a quiet start longer than udp_idle_timeout is relayed (the clock is current)", async () => {
  await using target = udpEcho();
  await using bouncer = await startBouncer(
    udpRule("127.0.0.1:0", `127.0.0.1:${target.port}`, 'udp_idle_timeout = "1s"'),
  );
  await delay(1_500); // DNS switched a while after the start: nothing arrived so far.
  const client = udpSocket();
  try {
    assertEquals(await udpRoundTrip(client, bouncer.port(), "first"), "first");
    await delay(600);
    // Still the same session: it was not taken as idle since the start.
    assertEquals(bouncer.log.filter({ event: "disconnect" }), []);
    assertEquals(await udpRoundTrip(client, bouncer.port(), "second"), "second");
    assertEquals(bouncer.log.filter({ event: "connect" }).length, 1);
  } finally {
    client.close();
  }
});
