import { loadRules } from "../fixtures/rules.ts";
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import { parseClientAddress } from "../../src/config/network.ts";
import { firstMatch } from "../../src/rules/match.ts";
import { buildPlan, formatTarget, listenNames, type ResolvedNames } from "../../src/rules/plan.ts";

function plan(text: string, resolved: ResolvedNames = new Map()) {
  const result = buildPlan(loadRules(text), resolved);
  assertEquals(result.problems, []);
  return result.listeners;
}

/** The plan with its problems (and this host's addresses). */
function planned(text: string, resolved: ResolvedNames = new Map(), local = new Set<string>()) {
  return buildPlan(loadRules(text), resolved, { localAddresses: local, interfaces: new Map() });
}

Deno.test("one listener per (protocol, address, port), rules in file order", () => {
  const listeners = plan(`
[[rule]]
name = "block-lab"
action = "block"
listen = "127.0.0.1:2222"
from = "127.0.0.2"
[[rule]]
name = "ssh"
listen = ["127.0.0.1:2222", "[::1]:2222"]
bounce_to = "127.0.0.1:22"
[[rule]]
name = "both"
protocol = ["tcp", "udp"]
listen = "127.0.0.1:53"
bounce_to = "127.0.0.1:5353"
`);
  assertEquals(listeners.map((l) => l.key), [
    "tcp 127.0.0.1:2222",
    "tcp [::1]:2222",
    "tcp 127.0.0.1:53",
    "udp 127.0.0.1:53",
  ]);
  assertEquals(listeners[0].bindings.map((b) => b.rule.name), ["block-lab", "ssh"]);
  assertEquals(listeners[0].bindings[0].targets, []);
  assertEquals(listeners[1].bindings.map((b) => b.rule.name), ["ssh"]);
});

Deno.test("port ranges map 1:1, keep the port, or all go to one port", () => {
  const listeners = plan(`
[[rule]]
listen = "127.0.0.1:8000-8002"
bounce_to = "127.0.0.1:9000-9002"
[[rule]]
listen = "127.0.0.1:8100-8101"
bounce_to = "127.0.0.2"
[[rule]]
listen = "127.0.0.1:8200-8201"
bounce_to = "127.0.0.3:7000"
`);
  const targets = Object.fromEntries(
    listeners.map((l) => [l.port, formatTarget(l.bindings[0].targets[0])]),
  );
  assertEquals(targets, {
    8000: "127.0.0.1:9000",
    8001: "127.0.0.1:9001",
    8002: "127.0.0.1:9002",
    8100: "127.0.0.2:8100",
    8101: "127.0.0.2:8101",
    8200: "127.0.0.3:7000",
    8201: "127.0.0.3:7000",
  });
});

Deno.test("* binds :: for both families; names use their resolved addresses", () => {
  const text = `
[[rule]]
listen = "*:80"
bounce_to = "198.51.100.101"
[[rule]]
listen = "lan0:81"
bounce_to = "old.example:8081"
`;
  assertEquals(listenNames(loadRules(text)), ["lan0"]);
  const listeners = plan(text, new Map([["lan0", { addresses: ["10.9.0.1", "fd00::1"] }]]));
  assertEquals(listeners.map((l) => [l.key, l.everyAddress]), [
    ["tcp [::]:80", true],
    ["tcp 10.9.0.1:81", false],
    ["tcp [fd00::1]:81", false],
  ]);
  assertEquals(formatTarget(listeners[1].bindings[0].targets[0]), "old.example:8081");
});

Deno.test("a name that did not resolve is a problem naming the rule", () => {
  const config = loadRules(
    '[[rule]]\nname = "x"\nlisten = "nowhere:80"\nbounce_to = "127.0.0.1"\n',
  );
  const { problems } = buildPlan(
    config,
    new Map([["nowhere", {
      error: '"nowhere" is neither a network interface here nor a resolvable host name',
    }]]),
  );
  assertEquals(problems.length, 1);
  assertIncludes(
    problems[0].message,
    'rule "x" (rule #1): listen: "nowhere:80": "nowhere" is neither',
  );
});

Deno.test("first match decides; no match is undefined (deny by default); mapped clients match v4", () => {
  const [listener] = plan(`
[[rule]]
name = "lab-blocked"
action = "block"
listen = "[::]:22"
from = "127.0.0.2/32"
[[rule]]
name = "loopback"
listen = "[::]:22"
from = ["127.0.0.0/8", "::1"]
bounce_to = "127.0.0.1:2022"
[[rule]]
name = "never"
listen = "[::]:22"
from = "127.0.0.3"
bounce_to = "127.0.0.1:9"
`);
  const match = (client: string) =>
    firstMatch(listener.bindings, parseClientAddress(client)!)?.rule.name;
  assertEquals(match("127.0.0.2"), "lab-blocked");
  assertEquals(match("::ffff:127.0.0.2"), "lab-blocked");
  assertEquals(match("127.0.0.3"), "loopback");
  assertEquals(match("::1"), "loopback");
  assertEquals(match("198.51.100.101"), undefined);
  assertEquals(match("2001:db8::1"), undefined);
  assert(listener.bindings.length === 3);
});

Deno.test("a TCP wildcard serves the specific addresses of its port; each rule keeps its address", () => {
  const { listeners, problems } = planned(`
[[rule]]
name = "office-ssh"
listen = "203.0.113.10:22"
bounce_to = "198.51.100.110:22"

[[rule]]
name = "any-ssh"
listen = "*:22"
bounce_to = "198.51.100.111:22"

[[rule]]
name = "v4-web"
listen = ["0.0.0.0:80", "127.0.0.1:80"]
bounce_to = "198.51.100.112:80"
`);
  assertEquals(problems, []);
  assertEquals(listeners.map((l) => l.key), ["tcp [::]:22", "tcp 0.0.0.0:80"]);
  const ssh = listeners[0].bindings.map((b) => [b.rule.name, b.only]);
  assertEquals(ssh, [["office-ssh", "203.0.113.10"], ["any-ssh", null]]);
  const client = parseClientAddress("198.51.100.7")!;
  const at = (address: string) =>
    firstMatch(listeners[0].bindings, client, parseClientAddress(address))?.rule.name;
  assertEquals(at("203.0.113.10"), "office-ssh");
  assertEquals(at("203.0.113.99"), "any-ssh", "another address falls to the wildcard rule");
});

Deno.test("overlapping UDP listeners are a problem naming both rules", () => {
  const { problems } = planned(`
[[rule]]
name = "dns-all"
protocol = "udp"
listen = "*:53"
bounce_to = "198.51.100.153"

[[rule]]
name = "dns-office"
protocol = "udp"
listen = "203.0.113.53:53"
bounce_to = "198.51.100.154"
`);
  assertEquals(problems.length, 1);
  assertEquals(problems[0].where, "rules.toml:11");
  assertMatch(
    problems[0].message,
    /rule "dns-office" \(rule #2\): listen: udp 203\.0\.113\.53:53 overlaps udp \[::\]:53 of rule "dns-all" \(rule #1\)/,
  );
});

Deno.test("a rule that bounces to its own listener is a problem with its line", () => {
  const cases: [string, string, boolean][] = [
    ["127.0.0.1:18080", "127.0.0.1", true], // port omitted: the listen port
    ["127.0.0.1:18080", "127.0.0.1:18080", true],
    ["*:18080", "127.0.0.5:18080", true], // the wildcard covers loopback
    ["*:18080", "203.0.113.7:18080", true], // ... and this host's addresses
    ["*:18080", "198.51.100.1:18080", false], // not this host
    ["127.0.0.1:8000-8009", "127.0.0.1:8000-8009", true],
    ["127.0.0.1:8000-8009", "127.0.0.1:9000-9009", false],
    ["127.0.0.1:18080", "127.0.0.2:18080", false], // another loopback address
    ["127.0.0.1:18080", "localhost:18080", false], // a name: the relay's loop guard
  ];
  for (const [listen, target, loops] of cases) {
    const { problems } = planned(
      `[[rule]]\nname = "r"\nlisten = "${listen}"\nbounce_to = "${target}"\n`,
      new Map(),
      new Set(["203.0.113.7"]),
    );
    assertEquals(
      problems.length,
      loops ? 1 : 0,
      `${listen} -> ${target}: ${JSON.stringify(problems)}`,
    );
    if (loops) {
      assertEquals(problems[0].where, "rules.toml:4");
      assertMatch(problems[0].message, /bounce_to: .* leads back to this rule's own listener/);
    }
  }
});
