import { assert, assertEquals } from "../assert.ts";
import { parseListen, parseTarget } from "../../src/config/endpoint.ts";
import { builtInServices, parseServices } from "../../src/config/services.ts";

const services = builtInServices();

function listen(text: string, protocols: ("tcp" | "udp")[] = ["tcp"]) {
  const parsed = parseListen(text, protocols, services);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed;
}

function listenError(text: string, protocols: ("tcp" | "udp")[] = ["tcp"]): string {
  const parsed = parseListen(text, protocols, services);
  assert("error" in parsed, `${text} should be rejected`);
  return parsed.error;
}

Deno.test("listen: every address form", () => {
  assertEquals(listen("192.0.2.1:80").host, { kind: "ip", address: "192.0.2.1", family: 4 });
  assertEquals(listen("[2001:db8::1]:80").host, {
    kind: "ip",
    address: "2001:db8::1",
    family: 6,
  });
  assertEquals(listen("0.0.0.0:80").host, { kind: "ip", address: "0.0.0.0", family: 4 });
  assertEquals(listen("[::]:80").host, { kind: "ip", address: "::", family: 6 });
  assertEquals(listen("*:80").host, { kind: "any" });
  assertEquals(listen("eth1:80").host, { kind: "name", name: "eth1" });
  // As written: interface names are case-sensitive on Linux (optT2), host names are not.
  assertEquals(listen("optT2:80").host, { kind: "name", name: "optT2" });
});

Deno.test("listen: ports, service names, ranges and port 0", () => {
  assertEquals(listen("127.0.0.1:80").ports, { first: 80, last: 80 });
  assertEquals(listen("127.0.0.1:http").ports, { first: 80, last: 80 });
  assertEquals(listen("127.0.0.1:DOMAIN", ["tcp", "udp"]).ports, { first: 53, last: 53 });
  assertEquals(listen("127.0.0.1:8000-8010").ports, { first: 8000, last: 8010 });
  assertEquals(listen("127.0.0.1:0").ports, { first: 0, last: 0 });
  assertEquals(listen("127.0.0.1:65535").ports, { first: 65535, last: 65535 });
});

Deno.test("listen: bad addresses say what is wrong", () => {
  const cases: [string, string][] = [
    ["127.0.0.1", "has no port"],
    ["2001:db8::1:80", "needs brackets"],
    ["[2001:db8::1:80", 'without a closing "]"'],
    ["[2001:db8::1]80", 'expected ":PORT"'],
    ["[127.0.0.1]:80", "brackets are for IPv6"],
    ["127.0.0.1:65536", "out of range"],
    ["127.0.0.1:", "is empty"],
    ["127.0.0.1:nosuchservice", 'unknown service name "nosuchservice"'],
    ["127.0.0.1:90-80", "runs backwards"],
    ["127.0.0.1:0-10", "1-65535"],
    ["127.0.0.01:80", "no leading zeros"],
    ["300.1.1.1:80", "not a valid IPv4"],
    ["bad_host!:80", "neither an IP address"],
    [":80", "no address before the port"],
    [" 127.0.0.1:80", "is not an address"],
    ["[fe80::1%eth0]:80", "zone id"],
  ];
  for (const [text, expected] of cases) {
    const error = listenError(text);
    assert(error.includes(expected), `${text}: ${error}`);
  }
});

Deno.test("targets: the port may be left out; * and unspecified addresses are not targets", () => {
  const t = parseTarget("192.0.2.10", ["tcp"], services);
  assert(!("error" in t));
  assertEquals(t.ports, null);
  const v6 = parseTarget("[2001:db8::10]", ["tcp"], services);
  assert(!("error" in v6) && v6.ports === null && v6.host.kind === "ip");
  const named = parseTarget("old.example:8080-8090", ["tcp"], services);
  assert(!("error" in named));
  assertEquals(named.ports, { first: 8080, last: 8090 });
  for (
    const [text, expected] of [["*:80", 'not "*"'], ["0.0.0.0:80", "not a target"], [
      "[::]:80",
      "not a target",
    ], ["127.0.0.1:0", "out of range"]]
  ) {
    const result = parseTarget(text, ["tcp"], services);
    assert("error" in result && result.error.includes(expected), `${text}`);
  }
});

Deno.test("service names follow the protocol", () => {
  const table = parseServices(
    "# comment\nhttp 80/tcp www # web\nhttp 80/udp\nonlytcp 1234/tcp\nodd 5/tcp\nodd 6/udp\n",
  );
  assertEquals(table.get("www"), { tcp: 80 });
  const mixed = parseListen("127.0.0.1:onlytcp", ["tcp", "udp"], table);
  assert("error" in mixed && mixed.error.includes("has no udp port"));
  const differing = parseListen("127.0.0.1:odd", ["tcp", "udp"], table);
  assert("error" in differing && differing.error.includes("different tcp and udp ports"));
  const tcpOnly = parseListen("127.0.0.1:onlytcp", ["tcp"], table);
  assert(!("error" in tcpOnly) && tcpOnly.ports.first === 1234);
});
