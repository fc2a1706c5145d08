import { assert, assertEquals } from "../assert.ts";
import {
  contains,
  type IpAddress,
  parseClientAddress,
  parseIp,
  parseNetwork,
} from "../../src/config/network.ts";

function net(text: string) {
  const parsed = parseNetwork(text);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed;
}

function ip(text: string): IpAddress {
  const parsed = parseClientAddress(text);
  if (!parsed) throw new Error(`bad ip ${text}`);
  return parsed;
}

Deno.test("networks: CIDR and single addresses of both families", () => {
  assertEquals(net("198.51.100.0/24").text, "198.51.100.0/24");
  assertEquals(net("192.0.2.7").text, "192.0.2.7/32");
  assertEquals(net("2001:db8::/32").text, "2001:db8::/32");
  assertEquals(net("::1").text, "::1/128");
  assertEquals(net("0.0.0.0/0").text, "0.0.0.0/0");
  assertEquals(net("::/0").text, "::/0");
});

Deno.test("networks: containment, /0, /32, /128 and family separation", () => {
  assert(contains(net("0.0.0.0/0"), ip("203.0.113.9")));
  assert(!contains(net("0.0.0.0/0"), ip("2001:db8::1")));
  assert(contains(net("::/0"), ip("2001:db8::1")));
  assert(contains(net("192.0.2.7/32"), ip("192.0.2.7")));
  assert(!contains(net("192.0.2.7/32"), ip("192.0.2.8")));
  assert(contains(net("::1/128"), ip("::1")));
  assert(contains(net("10.0.0.0/8"), ip("10.255.255.255")));
  assert(!contains(net("10.0.0.0/8"), ip("11.0.0.0")));
});

Deno.test("networks: IPv4-mapped clients match IPv4 networks", () => {
  assertEquals(ip("::ffff:127.0.0.2").toString(), "127.0.0.2");
  assert(contains(net("127.0.0.0/8"), ip("::ffff:127.0.0.2")));
  // A mapped network written in IPv6 form matches the IPv4 clients it maps.
  assertEquals(net("::ffff:10.0.0.0/104").text, "10.0.0.0/8");
  assert(contains(net("::ffff:10.0.0.0/104"), ip("10.1.2.3")));
});

Deno.test("networks: bad input is an error that says why", () => {
  const cases: [string, string][] = [
    ["10.1.2.3/8", 'did you mean "10.0.0.0/8"'],
    ["2001:db8::1/32", 'did you mean "2001:db8::/32"'],
    ["10.0.0.0/33", "prefix length must be a number from 0 to 32"],
    ["::/129", "from 0 to 128"],
    ["10.0.0.0/", "prefix length"],
    ["10.0.0.0/-1", "prefix length"],
    ["010.0.0.1", "no leading zeros"],
    ["10.0.0", "not a valid IPv4 address"],
    ["256.0.0.1", "not a valid IPv4"],
    ["fe80::1%eth0", "zone id"],
    ["2001:db8:::1", "not a valid IPv6"],
    ["example.com", "not an IP address"],
    ["", "not an IP address"],
  ];
  for (const [text, expected] of cases) {
    const result = parseNetwork(text);
    assert("error" in result, `${text} should be rejected`);
    assert(result.error.includes(expected), `${text}: ${result.error}`);
  }
});

Deno.test("parseIp is strict about IPv4 forms", () => {
  assert("error" in parseIp("0x7f.0.0.1"));
  assert("error" in parseIp("127.1"));
  assert("error" in parseIp("1.2.3.04"));
  assertEquals(String(parseIp("0.0.0.0")), "0.0.0.0");
});

Deno.test("parseClientAddress tolerates zones and never throws", () => {
  assertEquals(parseClientAddress("fe80::1%2")?.toString(), "fe80::1");
  assertEquals(parseClientAddress("garbage"), null);
});
