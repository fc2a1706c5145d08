/**
 * import-barefoot end to end: six barefootd.conf samples covering every
 * keyword of docs/BAREFOOT.md, each output checked by `portbounce check`, and one
 * relaying real traffic.
 */
import { fileURLToPath } from "node:url";
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import {
  exchangeFrom,
  freePortRange,
  runCli,
  startBouncer,
  tcpServer,
  tempDir,
} from "./helpers.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/barefoot/", import.meta.url));

/** Imports a sample, then runs `check` on the output; returns both. */
async function importAndCheck(name: string) {
  const imported = await runCli(["import-barefoot", `${FIXTURES}${name}`]);
  assertEquals(imported.code, 0, imported.stderr);
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir}/rules.toml`, imported.stdout);
  // The samples name documentation addresses, not this host's.
  const checked = await runCli(["check", "-c", `${dir}/rules.toml`, "--json", "--no-host-checks"]);
  assertEquals(checked.code, 0, checked.stdout + checked.stderr);
  return { toml: imported.stdout, warnings: imported.stderr, plan: JSON.parse(checked.stdout) };
}

type PlanListener = {
  protocol: string;
  address: string;
  port: number;
  rules: { rule: string; action: string; from: string[]; target: string | null }[];
};

function listener(plan: { listeners: PlanListener[] }, key: string): PlanListener {
  const found = plan.listeners.find((l) => `${l.protocol} ${l.address}:${l.port}` === key);
  assert(found, `no listener ${key}`);
  return found;
}

Deno.test("the transition example: port = http, first match, block before pass", async () => {
  const { toml, warnings, plan } = await importAndCheck("transition.conf");
  const web = listener(plan, "tcp 203.0.113.10:80");
  assertEquals(web.rules.map((r) => [r.rule, r.target]), [[
    "203.0.113.10-http",
    "198.51.100.110:80",
  ]]);
  const ssh = listener(plan, "tcp 203.0.113.10:22");
  assertEquals(ssh.rules.map((r) => [r.rule, r.action, r.from]), [
    ["block-203.0.113.10-22", "block", ["198.51.100.0/24"]],
    ["203.0.113.10-22", "pass", ["0.0.0.0/0", "::/0"]],
  ]);
  assertEquals(ssh.rules[1].target, "198.51.100.110:22");
  assertIncludes(toml, 'log = ["connect", "disconnect", "error"]');
  assertIncludes(toml, 'log = ["block"]'); // Barefoot's "log: connect" on a block rule
  assertIncludes(toml, 'source = "eth0" # external: eth0');
  // The block rule stands before a TCP-only pass rule: it binds no UDP socket.
  assertEquals(plan.listeners.filter((l: PlanListener) => l.protocol === "udp"), []);
  assertEquals(warnings, "");
});

Deno.test("an operator's office move imports whole and checks", async () => {
  const { toml, warnings, plan } = await importAndCheck("office.conf");
  assertEquals(
    plan.listeners.map((l: PlanListener) => `${l.protocol} ${l.address}:${l.port}`).sort(),
    ["tcp 203.0.113.10:22", "tcp 203.0.113.10:80", "tcp 203.0.113.53:53", "udp 203.0.113.53:53"],
  );
  assertIncludes(toml, "# Intranet web server (www.example.org)");
  // Only the MTU test has no portbounce equivalent; the sshd block rule is a comment.
  assertEquals(warnings.trim().split("\n").length, 2, warnings);
  assertIncludes(warnings, "office.conf:31: warning: client block { } on *:22 kept as a comment");
  assertIncludes(warnings, "office.conf:48: warning: not translated: alarm.test.mtu: yes");
});

Deno.test("every server setting is translated or reported", async () => {
  const { toml, warnings } = await importAndCheck("server_settings.conf");
  assertIncludes(
    toml,
    'log = ["stderr", "syslog", "/var/log/barefootd.log", "/var/log/barefootd.err"]',
  );
  assertIncludes(toml, 'syslog_facility = "daemon"');
  assertIncludes(toml, 'source = "198.51.100.101" # external: 198.51.100.101');
  assertIncludes(toml, 'log_level = "debug"');
  assertIncludes(toml, 'connect_timeout = "15s"');
  assertIncludes(toml, 'idle_timeout = "600s"');
  assertIncludes(toml, 'udp_idle_timeout = "120s"');
  assertIncludes(toml, 'from = ["10.0.0.0/8"]'); // dotted mask
  assertIncludes(
    toml,
    "# udp.connectdst: yes: portbounce always relays replies from the target only",
  );
  for (
    const keyword of [
      "external.rotation",
      "timeout.negotiate",
      "timeout.tcp_fin_wait",
      "user.privileged",
      "user.unprivileged",
      "user.libwrap",
      "clientmethod",
      "srchost",
      "libwrap.hosts_access",
      "cpu.schedule.mother",
      "child.maxidle",
      "internal.tcp.so_rcvbuf",
    ]
  ) {
    assertIncludes(warnings, `not translated: ${keyword}`);
    assertIncludes(toml, `# not translated (line`);
  }
});

Deno.test("limits, per-rule timeouts and log events; paid modules reported", async () => {
  const { toml, warnings } = await importAndCheck("limits.conf");
  for (
    const line of [
      "max_sessions = 100",
      'throttle = "20/1s"',
      "max_sessions_per_client = 4",
      'connect_timeout = "5s"',
      'idle_timeout = "3600s"',
      'udp_idle_timeout = "300s"',
      'idle_timeout = "900s"',
      'log = ["connect", "disconnect", "data", "error", "block"]',
      'bandwidth = "1MiB/s"',
      'source = "198.51.100.101" # redirect from: 198.51.100.101',
    ]
  ) assertIncludes(toml, line);
  for (
    const keyword of [
      "log: tcpinfo",
      "session.state.throttle",
      "session.inheritable",
      "session.state.key: hostid",
      "session.state.max: 2",
    ]
  ) assertIncludes(warnings, `not translated: ${keyword}`);
});

Deno.test("port operators, ranges, service names, masks and IPv6", async () => {
  const { plan } = await importAndCheck("ports.conf");
  const keys = plan.listeners.map((l: PlanListener) => `${l.protocol} ${l.address}:${l.port}`);
  assert(
    keys.includes("tcp 203.0.113.40:53") && keys.includes("udp 203.0.113.40:53"),
    "domain, both",
  );
  for (let port = 8000; port <= 8009; port++) assert(keys.includes(`tcp 203.0.113.41:${port}`));
  assertEquals(keys.filter((k: string) => k.startsWith("tcp 203.0.113.42:")).length, 6); // ge 65530
  assertEquals(keys.filter((k: string) => k.startsWith("tcp 203.0.113.43:")).length, 3); // le 3
  assertEquals(keys.filter((k: string) => k.startsWith("tcp 203.0.113.44:")).length, 2); // gt 65533
  assertEquals(keys.filter((k: string) => k.startsWith("tcp 203.0.113.45:")).length, 2); // lt 3
  assertEquals(keys.filter((k: string) => k.startsWith("tcp 203.0.113.46:")).length, 65534); // ne 80
  assert(keys.includes("tcp 203.0.113.47:80"), "/32 mask and port=http");
  const v6 = listener(plan, "tcp 2001:db8::46:80");
  assertEquals(v6.rules[0].target, "[2001:db8::10]:8080");
  assertEquals(v6.rules[0].from, ["2001:db8:1::/48"]);
  assertEquals(listener(plan, "tcp 203.0.113.42:65531").rules[0].from, ["192.168.0.0/16"]);
});

Deno.test("what cannot be expressed stays a comment, whole, with a warning", async () => {
  const { toml, warnings, plan } = await importAndCheck("untranslatable.conf");
  for (
    const reason of [
      "udp.connectdst: no",
      "internal: 198.51.100.101",
      "hostid pass { ... }",
      "monitor { ... }",
      "route { ... }",
      "from: client.example.org",
      "from: .example.org",
      "portbounce does not match client ports",
      "listens on addresses, not networks",
      "a pass rule without bounce to:",
    ]
  ) assertIncludes(warnings, reason);
  assertIncludes(toml, "#           from: client.example.org to: 203.0.113.52 port = 80");
  // Only the last rule is translatable; the others never became rules.
  assertEquals(plan.listeners.map((l: PlanListener) => `${l.protocol} ${l.address}:${l.port}`), [
    "tcp 203.0.113.57:80",
  ]);
});

Deno.test("syntax it cannot read exits 2 with the line", async () => {
  await using dir = await tempDir();
  const cases: [string, string][] = [
    [
      "client pass {\n  from: 0/0 to: 127.0.0.1 port = 80\n",
      ':1: "client" block opened here is never closed',
    ],
    ["logoutput: stderr\nfrobnicate: yes\n", ':2: unknown server setting "frobnicate:"'],
    [
      "client pass {\n  from: 0/0 to: 127.0.0.1 port = 80\n  colour: blue\n}\n",
      ':3: unknown keyword "colour:"',
    ],
    ["client maybe {\n}\n", ':1: expected "client pass {" or "client block {"'],
    ["hello world\n", ':1: expected a setting ("keyword: value") or a rule'],
    [
      "client pass {\n from: 0/0 to: 127.0.0.1 port = 99999\n bounce to: 127.0.0.1\n}\n",
      ":2: port 99999 is out of range",
    ],
    [
      "client pass {\n from: 0/0 to: 127.0.0.1 port = nosuch\n bounce to: 127.0.0.1\n}\n",
      ':2: unknown service name "nosuch"',
    ],
    [
      "client pass {\n from: 10.0.0.0/255.0.255.0 to: 127.0.0.1 port = 1\n bounce to: 127.0.0.1\n}\n",
      ':2: from: "10.0.0.0/255.0.255.0" has a non-contiguous mask',
    ],
  ];
  for (const [text, expected] of cases) {
    const path = `${dir}/bad.conf`;
    await Deno.writeTextFile(path, text);
    const result = await runCli(["import-barefoot", path]);
    assertEquals(result.code, 2, text);
    assertIncludes(result.stderr, `${path}${expected}`);
    assertEquals(result.stdout, "");
  }
});

Deno.test("an imported file relays real traffic, blocking where Barefoot blocked", async () => {
  await using target = tcpServer(async (conn) => {
    const buffer = new Uint8Array(64);
    const n = await conn.read(buffer);
    if (n) await conn.write(buffer.subarray(0, n));
  });
  const listen = freePortRange(1);
  await using dir = await tempDir();
  const template = await Deno.readTextFile(`${FIXTURES}loopback.conf.template`);
  await Deno.writeTextFile(
    `${dir}/barefootd.conf`,
    template.replaceAll("LISTEN_PORT", String(listen)).replaceAll(
      "TARGET_PORT",
      String(target.port),
    ),
  );
  const imported = await runCli(["import-barefoot", `${dir}/barefootd.conf`]);
  assertEquals(imported.code, 0, imported.stderr);
  await using bouncer = await startBouncer(imported.stdout);
  assertEquals((await exchangeFrom("127.0.0.3", listen, "through")).data, "through");
  assertEquals((await exchangeFrom("127.0.0.2", listen, "blocked")).data, "");
  const blockRule = `block-127.0.0.1-${listen}`;
  const passRule = `127.0.0.1-${listen}`;
  await bouncer.log.waitFor({
    event: "block",
    rule: blockRule,
    client: /^127\.0\.0\.2:\d+$/,
    reason: "rule",
  });
  await bouncer.log.waitFor({ event: "connect", rule: passRule, client: /^127\.0\.0\.3:/ });
  // log: iooperation shows each read at the default level.
  await bouncer.log.waitFor({ event: "data", rule: passRule, bytes: 7, direction: "up" });
  // session.state.max: 1 -- a second session from one client is refused, and logged.
  using held = await Deno.connect({ hostname: "127.0.0.1", port: listen });
  await bouncer.log.waitFor({ event: "connect", rule: passRule, client: /^127\.0\.0\.1:/ });
  assertEquals((await exchangeFrom("127.0.0.1", listen, "second")).data, "");
  await bouncer.log.waitFor({
    event: "block",
    rule: passRule,
    client: /^127\.0\.0\.1:/,
    reason: "max_sessions_per_client",
  });
  held.close();
  assertEquals(target.clients, ["127.0.0.1", "127.0.0.1"]);
});

Deno.test("a translation larger than a rule file may be is refused, nothing written", async () => {
  await using dir = await tempDir();
  // 40,000 rules: about 3.9 MB of barefootd.conf, over 4 MiB once translated with comments.
  const rules = Array.from(
    { length: 40_000 },
    (_, i) =>
      `client pass {\n  from: 0/0 to: 127.0.0.1 port = ${1024 + (i % 60_000)}\n` +
      `  bounce to: 127.0.0.2 port = ${1024 + (i % 60_000)}\n}\n`,
  );
  await Deno.writeTextFile(`${dir}/big.conf`, rules.join(""));
  const result = await runCli(["import-barefoot", `${dir}/big.conf`]);
  assertEquals(result.code, 2, result.stderr);
  assertEquals(result.stdout, "");
  assertIncludes(result.stderr, "over the 4194304 bytes a rule file may have (40000 rules)");
});

Deno.test("a port range that becomes thousands of listeners is pointed out", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/ge.conf`,
    "client pass {\n  from: 0/0 to: 127.0.0.1 port ge 1024\n  bounce to: 127.0.0.2\n}\n",
  );
  const result = await runCli(["import-barefoot", `${dir}/ge.conf`]);
  assertEquals(result.code, 0, result.stderr);
  assertIncludes(result.stderr, "listens on 64512 ports (tcp and udp): 129024 listeners");
});
