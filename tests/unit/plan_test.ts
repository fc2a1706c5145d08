import { loadRules } from "../fixtures/rules.ts";
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { parseClientAddress } from "../../src/config/network.ts";
import { firstMatch } from "../../src/rules/match.ts";
import { buildPlan, formatTarget, listenNames, type ResolvedNames } from "../../src/rules/plan.ts";

function plan(text: string, resolved: ResolvedNames = new Map()) {
  const result = buildPlan(loadRules(text), resolved);
  assertEquals(result.problems, []);
  return result.listeners;
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
bounce_to = "192.0.2.1"
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
  assertEquals(match("192.0.2.1"), undefined);
  assertEquals(match("2001:db8::1"), undefined);
  assert(listener.bindings.length === 3);
});
