/**
 * `portbounce export`: the nftables output loaded with `nft -f` into a
 * router namespace the test builds (clients, router, server), and every
 * decision checked at the server, not in a log; the pf output checked line by
 * line against golden files (pfctl does not run here).
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { fileURLToPath } from "node:url";
import { runCli, tempDir } from "./helpers.ts";

const GOLDEN = fileURLToPath(new URL("../fixtures/export/", import.meta.url));

async function cmd(command: string, args: string[], stdin?: string) {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  return {
    ok: out.success,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

const RULES = `
[[rule]]
name = "web"
listen = "203.0.113.10:80"
bounce_to = "203.0.113.200:8080"

[[rule]]
name = "range"
listen = "203.0.113.10:7000-7002"
bounce_to = "203.0.113.200:9000-9002"

[[rule]]
name = "lab-blocked"
action = "block"
listen = "203.0.113.11:22"
from = "198.51.100.3/32"

[[rule]]
name = "ssh"
listen = "203.0.113.11:22"
bounce_to = "203.0.113.200:8080"

[[rule]]
name = "only-two"
listen = "203.0.113.11:23"
from = "198.51.100.2/32"
bounce_to = "203.0.113.200:8080"

[[rule]]
name = "dns"
protocol = "udp"
listen = "203.0.113.10:53"
bounce_to = "203.0.113.200:5353"

[[rule]]
name = "web6"
listen = "[2001:db8:a::10]:80"
bounce_to = "[2001:db8:5::2]:8080"
`;

Deno.test("export: the example rule file in both formats, and a rule a router cannot do", async () => {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  for (const format of ["nftables", "pf"]) {
    const out = await runCli(["export", "--format", format, "-c", `${root}config.toml.example`]);
    assertEquals(out.code, 0, out.stderr);
    const golden = await Deno.readTextFile(`${GOLDEN}example.${format === "pf" ? "pf" : "nft"}`);
    assertEquals(
      out.stdout.replace(
        /^# Generated from .* by portbounce \S+/m,
        "# Generated from FILE by portbounce VERSION",
      )
        .replace(/^# Command: .*$/m, "# Command: COMMAND"),
      golden,
    );
    assertIncludes(out.stderr, "not done by the router: ssh (#3): idle_timeout 2h");
  }
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/local.toml`,
    `[[rule]]\nname = "all"\nlisten = "*:8080"\nbounce_to = "127.0.0.1:80"\n`,
  );
  const refused = await runCli(["export", "--format", "nftables", "-c", `${dir}/local.toml`]);
  assertEquals(refused.code, 2);
  assertEquals(refused.stdout, "");
  assertIncludes(
    refused.stderr,
    `${dir}/local.toml:4: rule "all" (rule #1): bounce_to: "127.0.0.1:80" is on the router itself`,
  );
  const usage = await runCli(["export", "--format", "iptables", "-c", `${dir}/local.toml`]);
  assertEquals(usage.code, 2);
  assertIncludes(usage.stderr, "--format must be one of nftables, pf");
});

Deno.test("export --format pf: each construct as pf.conf(5) writes it (golden file)", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/rules.toml`,
    RULES + `
[[rule]]
name = "pool"
listen = "203.0.113.12:443"
bounce_to = ["203.0.113.201:443", "203.0.113.202:443"]
balance = "round-robin"
max_sessions = 100
max_sessions_per_client = 4
throttle = "20/1s"
`,
  );
  const out = await runCli(["export", "--format", "pf", "-c", `${dir}/rules.toml`, "--masquerade"]);
  assertEquals(out.code, 0, out.stderr);
  const golden = await Deno.readTextFile(`${GOLDEN}constructs.pf`);
  const got = out.stdout.replace(
    /^# Generated from .* by portbounce \S+/m,
    "# Generated from FILE by portbounce VERSION",
  )
    .replace(/^# Command: .*$/m, "# Command: COMMAND");
  const [gotLines, goldenLines] = [got.split("\n"), golden.split("\n")];
  for (let i = 0; i < Math.max(gotLines.length, goldenLines.length); i++) {
    assertEquals(gotLines[i], goldenLines[i], `line ${i + 1}`);
  }
});

const root = Deno.uid() === 0;
const nft = (await cmd("nft", ["--version"]).catch(() => ({ ok: false }))).ok;
const socat = (await cmd("socat", ["-V"]).catch(() => ({ ok: false }))).ok;

const NS = { client: `pbx-c${Deno.pid}`, router: `pbx-r${Deno.pid}`, server: `pbx-s${Deno.pid}` };

async function ip(args: string[]) {
  const out = await cmd("ip", args);
  if (!out.ok) throw new Error(`ip ${args.join(" ")}: ${out.stderr}`);
}
const inNs = (ns: string, command: string, args: string[], stdin?: string) =>
  cmd("ip", ["netns", "exec", ns, command, ...args], stdin);

async function buildNetwork(dir: string): Promise<Deno.ChildProcess[]> {
  for (const ns of Object.values(NS)) await ip(["netns", "add", ns]);
  const link = async (a: string, aIf: string, b: string, bIf: string) => {
    await ip([
      "link",
      "add",
      `${aIf}${Deno.pid}`,
      "type",
      "veth",
      "peer",
      "name",
      `${bIf}${Deno.pid}`,
    ]);
    await ip(["link", "set", `${aIf}${Deno.pid}`, "netns", a, "name", aIf]);
    await ip(["link", "set", `${bIf}${Deno.pid}`, "netns", b, "name", bIf]);
  };
  await link(NS.client, "c0", NS.router, "r0");
  await link(NS.server, "s0", NS.router, "r1");
  const addrs: [string, string, string][] = [
    [NS.client, "c0", "198.51.100.2/24"],
    [NS.client, "c0", "198.51.100.3/24"],
    [NS.client, "c0", "2001:db8:c::2/64"],
    [NS.router, "r0", "198.51.100.1/24"],
    [NS.router, "r0", "2001:db8:c::1/64"],
    [NS.router, "r1", "203.0.113.129/25"],
    [NS.router, "r1", "2001:db8:5::1/64"],
    [NS.router, "lo", "203.0.113.10/32"],
    [NS.router, "lo", "203.0.113.11/32"],
    [NS.router, "lo", "2001:db8:a::10/128"],
    [NS.server, "s0", "203.0.113.200/25"],
    [NS.server, "s0", "2001:db8:5::2/64"],
  ];
  for (const [ns, dev, address] of addrs) {
    await ip([
      "-n",
      ns,
      "addr",
      "add",
      address,
      "dev",
      dev,
      ...(address.includes(":") ? ["nodad"] : []),
    ]);
  }
  for (const ns of Object.values(NS)) {
    for (
      const dev of [
        "lo",
        ns === NS.router ? "r0" : ns === NS.client ? "c0" : "s0",
        ...(ns === NS.router ? ["r1"] : []),
      ]
    ) {
      await ip(["-n", ns, "link", "set", dev, "up"]);
    }
  }
  await ip(["-n", NS.client, "route", "add", "default", "via", "198.51.100.1"]);
  await ip(["-n", NS.client, "-6", "route", "add", "default", "via", "2001:db8:c::1"]);
  await ip(["-n", NS.server, "route", "add", "default", "via", "203.0.113.129"]);
  await ip(["-n", NS.server, "-6", "route", "add", "default", "via", "2001:db8:5::1"]);
  await inNs(NS.router, "sysctl", [
    "-qw",
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
  ]);
  // The old servers: each answers with the client address it saw, and notes it.
  const log = `${dir}/seen.log`;
  const serve = (listen: string, tag: string) =>
    new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        NS.server,
        "socat",
        listen,
        `SYSTEM:echo ${tag} \\$SOCAT_PEERADDR | tee -a ${log}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
  const children = [
    serve("TCP4-LISTEN:8080,fork,reuseaddr", "web"),
    serve("TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=1", "web6"),
    serve("UDP4-RECVFROM:5353,fork", "dns"),
    ...[9000, 9001, 9002].map((port) => serve(`TCP4-LISTEN:${port},fork,reuseaddr`, String(port))),
  ];
  await new Promise((resolve) => setTimeout(resolve, 300));
  return children;
}

async function tearDown(children: Deno.ChildProcess[]) {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Gone.
    }
  }
  await Promise.allSettled(children.map((c) => c.status));
  for (const ns of Object.values(NS)) await ip(["netns", "del", ns]).catch(() => {});
}

/** A TCP (or UDP) exchange from the client namespace; resolves to what came back, or "". */
async function ask(address: string, port: number, from: string, udp = false): Promise<string> {
  const family = address.includes(":") ? "6" : "4";
  const target = family === "6" ? `[${address}]` : address;
  const out = await inNs(NS.client, "socat", [
    "-T1",
    "-",
    `${udp ? "UDP" : "TCP"}${family}:${target}:${port},bind=${family === "6" ? `[${from}]` : from}${
      udp ? "" : ",connect-timeout=1"
    }`,
  ], "q\n");
  return out.stdout.trim();
}

Deno.test({
  name:
    "export --format nftables: loaded into a router namespace, it does what portbounce did (checked at the server)",
  ignore: !root || !nft || !socat,
  async fn() {
    await using dir = await tempDir();
    await Deno.writeTextFile(`${dir}/rules.toml`, RULES);
    const exported = await runCli(["export", "--format", "nftables", "-c", `${dir}/rules.toml`]);
    assertEquals(exported.code, 0, exported.stderr);
    await Deno.writeTextFile(`${dir}/router.nft`, exported.stdout);
    const children = await buildNetwork(dir);
    try {
      const loaded = await inNs(NS.router, "nft", ["-f", `${dir}/router.nft`]);
      assert(loaded.ok, loaded.stderr);
      // Loading it again replaces it: still one table.
      assert((await inNs(NS.router, "nft", ["-f", `${dir}/router.nft`])).ok);
      assertEquals(
        (await inNs(NS.router, "nft", ["list", "tables"])).stdout.trim(),
        "table inet portbounce",
      );

      // TCP pass, the server sees the real client.
      assertEquals(await ask("203.0.113.10", 80, "198.51.100.2"), "web 198.51.100.2");
      // A port range maps 1:1.
      for (const port of [7000, 7001, 7002]) {
        assertEquals(
          await ask("203.0.113.10", port, "198.51.100.2"),
          `${port + 2000} 198.51.100.2`,
        );
      }
      // Block by source before a pass rule; others pass.
      assertEquals(await ask("203.0.113.11", 22, "198.51.100.3"), "");
      assertEquals(await ask("203.0.113.11", 22, "198.51.100.2"), "web 198.51.100.2");
      // Deny by default: only .2 may use port 23.
      assertEquals(await ask("203.0.113.11", 23, "198.51.100.3"), "");
      assertEquals(await ask("203.0.113.11", 23, "198.51.100.2"), "web 198.51.100.2");
      // A port nobody exported: untouched by the table (nothing listens on the router there).
      // UDP and IPv6.
      assertEquals(await ask("203.0.113.10", 53, "198.51.100.2", true), "dns 198.51.100.2");
      // socat writes IPv6 addresses in full.
      assertEquals(
        await ask("2001:db8:a::10", 80, "2001:db8:c::2"),
        "web6 [2001:0db8:000c:0000:0000:0000:0000:0002]",
      );
      // Checked at the server: .3 never got through.
      const seen = await Deno.readTextFile(`${dir}/seen.log`);
      assert(!seen.includes("198.51.100.3"), seen);

      // --masquerade: the server has no route back to the clients, and sees the router.
      const masq = await runCli([
        "export",
        "--format",
        "nftables",
        "-c",
        `${dir}/rules.toml`,
        "--masquerade",
      ]);
      await Deno.writeTextFile(`${dir}/masq.nft`, masq.stdout);
      assert((await inNs(NS.router, "nft", ["-f", `${dir}/masq.nft`])).ok);
      await ip(["-n", NS.server, "route", "del", "default"]);
      assertEquals(await ask("203.0.113.10", 80, "198.51.100.2"), "web 203.0.113.129");
      assertEquals(
        (await inNs(NS.router, "nft", ["list", "tables"])).stdout.trim(),
        "table inet portbounce",
      );
    } finally {
      await tearDown(children);
    }
  },
});

Deno.test({
  name:
    "export --format nftables: every construct is accepted by nft (limits, pools, *, interfaces, IPv6)",
  ignore: !root || !nft,
  async fn() {
    await using dir = await tempDir();
    await Deno.writeTextFile(
      `${dir}/rules.toml`,
      RULES + `
[[rule]]
name = "pool"
listen = ["203.0.113.12:443", "*:8443"]
bounce_to = ["203.0.113.201:443", "203.0.113.202:443"]
balance = "source-hash"
max_sessions = 100
max_sessions_per_client = 4
throttle = "100/5m"

[[rule]]
name = "turns"
listen = "lo:9443"
from = ["198.51.100.0/24", "2001:db8:c::/48"]
bounce_to = ["[2001:db8:5::2]:443", "[2001:db8:5::3]:443", "203.0.113.201:443"]
balance = "round-robin"
log = ["block"]
`,
    );
    for (const extra of [[], ["--masquerade", "--interface", "eth1", "--table", "pb-test"]]) {
      const out = await runCli([
        "export",
        "--format",
        "nftables",
        "-c",
        `${dir}/rules.toml`,
        ...extra,
      ]);
      assertEquals(out.code, 0, out.stderr);
      await Deno.writeTextFile(`${dir}/all.nft`, out.stdout);
      const ns = `pbx-chk${Deno.pid}`;
      await ip(["netns", "add", ns]);
      try {
        const checked = await cmd("ip", ["netns", "exec", ns, "nft", "-c", "-f", `${dir}/all.nft`]);
        assert(checked.ok, `${checked.stderr}\n${out.stdout}`);
      } finally {
        await ip(["netns", "del", ns]).catch(() => {});
      }
    }
  },
});

Deno.test("export --format pf: a pool whose targets' ports differ is listed as not done; a problem is said once", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/pool.toml`,
    `[[rule]]\nname = "web"\nlisten = "198.51.100.1:80"\n` +
      `bounce_to = ["203.0.113.10:8080", "203.0.113.11:8081"]\nbalance = "round-robin"\n`,
  );
  const pf = await runCli(["export", "--format", "pf", "-c", `${dir}/pool.toml`]);
  assertEquals(pf.code, 0, pf.stderr);
  const why =
    "round-robin: a pf address pool shares one port and these targets' ports differ, so every session goes to the first target";
  assertIncludes(pf.stderr, `not done by the router: web (#1): ${why}`);
  assertIncludes(pf.stdout, `#   web (#1): ${why}`);
  // nftables maps each target with its own port: nothing to say there.
  const nft = await runCli(["export", "--format", "nftables", "-c", `${dir}/pool.toml`]);
  assertEquals(nft.stderr.includes("pool shares one port"), false);

  await Deno.writeTextFile(
    `${dir}/families.toml`,
    `[[rule]]\nname = "dns"\nprotocol = ["tcp", "udp"]\nlisten = "[2001:db8::53]:53"\n` +
      `bounce_to = "203.0.113.53"\n`,
  );
  const refused = await runCli(["export", "--format", "pf", "-c", `${dir}/families.toml`]);
  assertEquals(refused.code, 2);
  assertEquals(refused.stderr.split("no IPv6 target").length - 1, 1, refused.stderr);
});
