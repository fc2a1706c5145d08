/**
 * import-barefoot's translation, pure: barefootd.conf text in, a rule file
 * out that loads, read back through the real loader.
 */
import { fileURLToPath } from "node:url";
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import { loadRules } from "../fixtures/rules.ts";
import { parseBarefoot } from "../../src/barefoot/parse.ts";
import { translateBarefoot } from "../../src/barefoot/translate.ts";
import { builtInServices } from "../../src/config/services.ts";
import type { Config, Rule } from "../../src/config/types.ts";

const services = builtInServices();
const FIXTURES = fileURLToPath(new URL("../fixtures/barefoot/", import.meta.url));

function translate(text: string) {
  const { toml, warnings } = translateBarefoot(parseBarefoot(text), "barefootd.conf", services);
  return {
    toml,
    warnings: warnings.map((w) => `${w.line}: ${w.message}`),
    config: loadRules(toml),
  };
}

function rule(config: Config, name: string): Rule {
  const found = config.rules.find((r) => r.name === name);
  assert(found, `no rule ${name} in ${config.rules.map((r) => r.name).join(", ")}`);
  return found;
}

const office = translate(Deno.readTextFileSync(`${FIXTURES}office.conf`));

Deno.test("rules are named after where they listen, unique", () => {
  assertEquals(office.config.rules.map((r) => r.name), [
    "203.0.113.10-http",
    "block-203.0.113.10-ssh",
    "203.0.113.10-ssh",
    "203.0.113.53-domain",
  ]);
  const twice = translate(`
client pass {
  from: 10.0.0.0/8 to: 203.0.113.1 port = 22
  bounce to: 198.51.100.101
  protocol: tcp
}
client pass {
  from: 0/0 to: 203.0.113.1 port = 22
  bounce to: 198.51.100.102
  protocol: tcp
}
client pass {
  from: 0/0 to: 2001:db8::1 port ge 65000
  bounce to: 2001:db8::2
  protocol: tcp
}`);
  assertEquals(twice.config.rules.map((r) => r.name), [
    "203.0.113.1-22",
    "203.0.113.1-22-2",
    "2001_db8__1-from-65000",
  ]);
});

Deno.test("comments stay beside what they annotate; the file's header stays on top", () => {
  const { toml } = office;
  assertMatch(toml, /^# Translated from[^\n]*\n[^\n]*\n#\n# Office move, October/);
  assertMatch(
    toml,
    /# Intranet web server \(www\.example\.org\)\n# barefootd\.conf line 9: client pass\n\[\[rule\]\]\nname = "203\.0\.113\.10-http"/,
  );
  assertMatch(
    toml,
    /# four ssh sessions per administrator\n\[\[rule\]\]\nname = "203\.0\.113\.10-ssh"/,
  );
  assertMatch(toml, /# the old network's gateway side\nsource = "198\.51\.100\.101"/);
  assertMatch(toml, /# end of file\n$/);
});

Deno.test("logoutput syslog/FACILITY keeps syslog; errorlog outputs join the log", () => {
  const { server } = office.config;
  assertEquals(server.log.map((o) => o.kind === "file" ? o.path : o.kind), [
    "syslog",
    "/var/log/barefootd.log",
    "stderr",
  ]);
  assertEquals(server.syslogFacility, "daemon");
  const local = translate("logoutput: syslog/local3\n").config.server;
  assertEquals([local.log.map((o) => o.kind), local.syslogFacility], [["syslog"], "local3"]);
  const bad = translate("logoutput: stderr syslog/nosuch\n");
  assertIncludes(bad.warnings.join("\n"), '"nosuch" is not a syslog facility');
});

Deno.test("iooperation logs data; session limits log their refusals", () => {
  assertEquals([...rule(office.config, "203.0.113.10-http").log], [
    "connect",
    "disconnect",
    "error",
    "data",
  ]);
  const ssh = rule(office.config, "203.0.113.10-ssh");
  assertEquals(ssh.maxSessionsPerClient, 4);
  assert(ssh.log.has("block"), "a refusal over session.state.max is logged");
});

Deno.test("timeout.io sets only the timeouts of the rule's protocols", () => {
  const ssh = rule(office.config, "203.0.113.10-ssh");
  assertEquals(ssh.idleTimeoutMs, 7_200_000);
  assertEquals(ssh.udpIdleTimeoutMs, 3_600_000); // [defaults], untouched
  assert(!/udp_idle_timeout = "7200s"/.test(office.toml));
  const udp = translate(`client pass {
  from: 0/0 to: 203.0.113.5 port = 514
  bounce to: 198.51.100.105
  protocol: udp
  timeout.io: 30
}`);
  assertIncludes(udp.toml, 'udp_idle_timeout = "30s"');
  assert(!udp.toml.includes('idle_timeout = "30s" # timeout.io: 30\nudp'), udp.toml);
  assertEquals(udp.toml.match(/^idle_timeout/gm), null);
});

Deno.test("a block rule binds only what the pass rules after it listen on", () => {
  const block = rule(office.config, "block-203.0.113.10-ssh");
  assertEquals(block.protocols, ["tcp"]); // no protocol: given, the ssh pass rule is TCP
  assertEquals(block.listen.map((l) => l.text), ["203.0.113.10:22"]);
  // `to: 0/0 port = ssh` with no pass rule after it: a comment, not a *:22 listener.
  assert(!office.config.rules.some((r) => r.listen.some((l) => l.text === "*:22")));
  assertIncludes(office.toml, "# client block (line 31) on *:22: deny by default already refuses");
  assertIncludes(office.warnings.join("\n"), "31: client block { } on *:22 kept as a comment");

  const narrowed = translate(`
client block {
  from: 198.51.100.0/24 to: 0/0 port ne 80
}
client pass {
  from: 0/0 to: 203.0.113.7 port 20-25
  bounce to: 198.51.100.107
  protocol: tcp
}
client pass {
  from: 0/0 to: 203.0.113.8 port = 8080
  bounce to: 198.51.100.108
}`);
  const wide = rule(narrowed.config, "block-any-not-80");
  assertEquals(wide.protocols, ["tcp", "udp"]);
  assertEquals(wide.listen.map((l) => l.text), ["203.0.113.7:20-25", "203.0.113.8:8080"]);
});

Deno.test("external: becomes source, by family where targets differ", () => {
  assertEquals(office.config.server.source?.text, "198.51.100.101");
  const dns = rule(office.config, "203.0.113.53-domain");
  assertEquals(dns.source?.text, "198.51.100.102"); // redirect from:
  assertEquals(dns.bandwidth, 1_048_576);

  const both = translate(`external: 198.51.100.101
external: 2001:db8::1
external: 198.51.100.199
client pass {
  from: 0/0 to: 203.0.113.1 port = 80
  bounce to: 198.51.100.110
  protocol: tcp
}
client pass {
  from: 0/0 to: 2001:db8:1::1 port = 80
  bounce to: 2001:db8::10
  protocol: tcp
}`);
  assertEquals(both.config.server.source, null);
  assertEquals(both.config.rules.map((r) => r.source?.text), ["198.51.100.101", "[2001:db8::1]"]);
  assertIncludes(both.warnings.join("\n"), "3: not translated: external: 198.51.100.199");

  const iface = translate("external: eth0\nexternal.protocol: ipv4\n").config.server.source;
  assertEquals(iface, { kind: "interface", name: "eth0", text: "eth0" });
  const named = translate("external: gw.example.org\n");
  assertIncludes(named.warnings.join("\n"), "a host name");
  assertEquals(named.config.server.source, null);
});

Deno.test("monitor blocks become alarms on the rules they watch", () => {
  const web = rule(office.config, "203.0.113.10-http");
  assertEquals(web.alarmQuietMs, 600_000);
  assertEquals(web.alarmErrors?.text, "10/60s");
  assertEquals(rule(office.config, "203.0.113.10-ssh").alarmQuietMs, null);
  assertIncludes(office.warnings.join("\n"), "48: not translated: alarm.test.mtu: yes");
  assertIncludes(office.toml, "# barefootd.conf line 44: monitor, alarms on 203.0.113.10-http");

  const everywhere = translate(`
monitor {
  from: 0/0 to: 0/0
  alarm.data.send.internal: 0 in 900
  alarm.data.recv.internal: 1000 in 60
}
client pass {
  from: 0/0 to: 203.0.113.1 port = 80
  bounce to: 198.51.100.110
  protocol: tcp
}`);
  assertEquals(everywhere.config.rules[0].alarmQuietMs, 900_000);
  assertIncludes(everywhere.warnings.join("\n"), "not on a volume of data");
  const nowhere = translate(`monitor {
  to: 203.0.113.99 port = 80
  alarm.data.recv.external: 0 in 60
}`);
  assertIncludes(nowhere.warnings.join("\n"), "it watches no translated pass rule");
});
