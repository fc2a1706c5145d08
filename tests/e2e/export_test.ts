/**
 * `portbounce export`: the nftables output loaded with `nft -f` into a
 * router namespace the test builds (clients, router, server), and every
 * decision checked at the server, not in a log; the pf output checked line by
 * line against golden files (pfctl does not run here).
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { fileURLToPath } from "node:url";
import { runCli, tempDir, waitUntil } from "./helpers.ts";
import {
  ask,
  buildNetwork,
  cmd,
  inNs,
  ip,
  nft,
  NS,
  root,
  socat,
  tearDown,
} from "../fixtures/export/router.ts";

const GOLDEN = fileURLToPath(new URL("../fixtures/export/", import.meta.url));

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
      // Forwarding is on, yet a target is reached only through a rule, never directly: not by
      // the client a rule blocks, nor by one a rule lets through (as under portbounce).
      assertEquals(await ask("203.0.113.200", 8080, "198.51.100.3"), "");
      assertEquals(await ask("203.0.113.200", 8080, "198.51.100.2"), "");
      assertEquals(await ask("203.0.113.200", 9001, "198.51.100.3"), "");
      assertEquals(await ask("203.0.113.200", 5353, "198.51.100.3", true), "");
      assertEquals(await ask("2001:db8:5::2", 8080, "2001:db8:c::2"), "");
      // Checked at the server: .3 never got through.
      const seen = await Deno.readTextFile(`${dir}/seen.log`);
      assert(!seen.includes("198.51.100.3"), seen);
      // A port of the server that no rule names is left as the router's own rules have it.
      assertEquals(await ask("203.0.113.200", 9999, "198.51.100.3"), "other 198.51.100.3");

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
from = ["198.51.100.0/24", "198.51.100.7", "2001:db8:c::/48"]
bounce_to = ["203.0.113.201:443", "203.0.113.202:443"]
balance = "source-hash"
max_sessions = 100
max_sessions_per_client = 4
throttle = "100/5m"

[[rule]]
name = "turns"
listen = "203.0.113.13:9443"
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

/** Opens a TCP session from the client namespace and keeps it open; resolves to the first line. */
function hold(address: string, port: number): { line: Promise<string>; close(): Promise<void> } {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      NS.client,
      "socat",
      "-T8",
      "-",
      `TCP4:${address}:${port},connect-timeout=2`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const line = (async () => {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    reader.releaseLock();
    return text.trim();
  })();
  return {
    line,
    async close() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone (a session the router refused ends by itself).
      }
      await child.status;
      await child.stdout.cancel().catch(() => {});
      await child.stdin.abort().catch(() => {});
    },
  };
}

Deno.test({
  name:
    "export --format nftables: a source interface this host lacks is the router's; limits count once per rule",
  ignore: !root || !nft || !socat,
  async fn() {
    // Barefoot's `external: r1`, as import-barefoot writes it; this host has no r1, the router has.
    assert(!Deno.networkInterfaces().some((i) => i.name === "r1"));
    await using dir = await tempDir();
    await Deno.writeTextFile(
      `${dir}/rules.toml`,
      `[server]
source = "r1"

[[rule]]
name = "web"
listen = "203.0.113.10:80"
bounce_to = "203.0.113.200:8080"

[[rule]]
name = "limited"
listen = ["203.0.113.10:81", "203.0.113.11:81"]
bounce_to = "203.0.113.200:8081"
max_sessions = 2
`,
    );
    const exported = await runCli(["export", "--format", "nftables", "-c", `${dir}/rules.toml`]);
    assertEquals(exported.code, 0, exported.stderr);
    assertEquals(exported.stderr, "");
    assertIncludes(exported.stdout, `oifname "r1" masquerade`);
    // pf says the same in its own terms, and that its limit counts on each pf rule.
    const pf = await runCli(["export", "--format", "pf", "-c", `${dir}/rules.toml`]);
    assertEquals(pf.code, 0, pf.stderr);
    assertIncludes(pf.stdout, "nat-to (r1)");
    assertIncludes(
      pf.stderr,
      "limited (#2): max_sessions 2 once for the whole rule: pf counts states per pf rule, and this rule is 2 of them",
    );
    await Deno.writeTextFile(`${dir}/router.nft`, exported.stdout);
    const children = await buildNetwork(dir);
    const held: ReturnType<typeof hold>[] = [];
    try {
      const loaded = await inNs(NS.router, "nft", ["-f", `${dir}/router.nft`]);
      assert(loaded.ok, loaded.stderr);
      // The server has no route back to the clients: it sees the router's address on r1.
      await ip(["-n", NS.server, "route", "del", "default"]);
      assertEquals(await ask("203.0.113.10", 80, "198.51.100.2"), "web 203.0.113.129");
      // max_sessions = 2 over two listen addresses: two sessions in all, not two on each.
      for (const address of ["203.0.113.10", "203.0.113.11", "203.0.113.11"]) {
        held.push(hold(address, 81));
        if (held.length < 3) assertEquals(await held.at(-1)!.line, "held 203.0.113.129");
      }
      assertEquals(await held[2].line, "");
      // Once a session ends, the rule takes one again.
      await held.shift()!.close();
      await waitUntil(
        async () => {
          const next = hold("203.0.113.11", 81);
          held.push(next);
          return (await next.line) === "held 203.0.113.129";
        },
        "a session taken again",
        { timeoutMs: 5_000 },
      );
    } finally {
      await Promise.all(held.map((h) => h.close()));
      await tearDown(children);
    }
  },
});

const PARTLY = `
[[rule]]
name = "six"
listen = "[2001:db8:a::10]:80"
bounce_to = "203.0.113.200:9000"

[[rule]]
name = "everyone"
listen = "*:80"
bounce_to = ["203.0.113.200:8080", "[2001:db8:5::2]:8080"]
`;

Deno.test("export --skip-unsupported: writes the rest, says what was left out, exits 4", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir}/rules.toml`, PARTLY);
  for (const format of ["nftables", "pf"]) {
    const whole = await runCli(["export", "--format", format, "-c", `${dir}/rules.toml`]);
    assertEquals(whole.code, 2);
    assertEquals(whole.stdout, "");
    assertIncludes(whole.stderr, "nothing was written (--skip-unsupported writes the rest)");
    const partial = await runCli([
      "export",
      "--format",
      format,
      "-c",
      `${dir}/rules.toml`,
      "--skip-unsupported",
    ]);
    assertEquals(partial.code, 4, partial.stderr);
    const why =
      `${dir}/rules.toml:5: rule "six" (rule #1): bounce_to has no IPv6 target for listen 2001:db8:a::10: a router cannot translate between families`;
    assertIncludes(partial.stderr, `left out: ${why}`);
    assertIncludes(
      partial.stderr,
      `${dir}/rules.toml: 1 of 2 rules left out and refused at the router; the rest was written`,
    );
    assertIncludes(
      partial.stdout,
      `#   six (#1): tcp [2001:db8:a::10]:80 from any -> 203.0.113.200:9000 [LEFT OUT: see below]`,
    );
    assertIncludes(partial.stdout, `#   ${why}`);
    assertIncludes(partial.stdout, "# six (#1): LEFT OUT, refused here");
  }
});

Deno.test({
  name:
    "export --skip-unsupported: a rule left out is refused at the router, not taken by a later rule",
  ignore: !root || !nft || !socat,
  async fn() {
    await using dir = await tempDir();
    await Deno.writeTextFile(`${dir}/rules.toml`, PARTLY);
    const exported = await runCli([
      "export",
      "--format",
      "nftables",
      "-c",
      `${dir}/rules.toml`,
      "--skip-unsupported",
    ]);
    assertEquals(exported.code, 4, exported.stderr);
    await Deno.writeTextFile(`${dir}/router.nft`, exported.stdout);
    const children = await buildNetwork(dir);
    try {
      const loaded = await inNs(NS.router, "nft", ["-f", `${dir}/router.nft`]);
      assert(loaded.ok, loaded.stderr);
      // IPv6 clients of "six" would be taken by "everyone" if it were simply dropped from the file.
      assertEquals(await ask("2001:db8:a::10", 80, "2001:db8:c::2"), "");
      // Its target stays out of reach directly, as under portbounce.
      assertEquals(await ask("203.0.113.200", 9000, "198.51.100.2"), "");
      // The rest is there: "everyone" on IPv4, and on an IPv6 address "six" does not name.
      assertEquals(await ask("203.0.113.10", 80, "198.51.100.2"), "web 198.51.100.2");
      assertEquals(
        await ask("2001:db8:c::1", 80, "2001:db8:c::2"),
        "web6 [2001:0db8:000c:0000:0000:0000:0000:0002]",
      );
    } finally {
      await tearDown(children);
    }
  },
});
