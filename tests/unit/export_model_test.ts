/**
 * What `export` decides before writing a line: which clients a rule refuses
 * at the router, what a router cannot do, and how each format says it. Pure:
 * names and interfaces are given, nothing is looked up.
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { parseConfig } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";
import { buildExport, type ExportModel, exportProblems } from "../../src/export/model.ts";
import { nftModel, renderNftables } from "../../src/export/nftables.ts";
import { pfModel, renderPf } from "../../src/export/pf.ts";
import type { ExportOptions } from "../../src/export/text.ts";

function model(text: string, interfaces: Record<string, string[]> = {}): ExportModel {
  const parsed = parseConfig(text, "rules.toml", builtInServices());
  assert(parsed.ok, JSON.stringify(!parsed.ok && parsed.problems));
  return buildExport(parsed.config, {
    hosts: new Map(),
    interfaces: new Map(Object.entries(interfaces)),
    isLocal: (ip) => ip.range() === "loopback",
  });
}

const OPTIONS: ExportOptions = {
  source: "rules.toml",
  version: "0",
  command: "portbounce export",
  table: "portbounce",
  masquerade: false,
  interface: null,
};

Deno.test("export: a wildcard listener without a target of a family refuses that family, not a later rule's", () => {
  const m = model(`
[[rule]]
name = "star"
listen = "*:85"
bounce_to = "203.0.113.200:8080"

[[rule]]
name = "later"
listen = "[2001:db8:a::10]:85"
bounce_to = "[2001:db8:5::2]:8081"
`);
  assertEquals(exportProblems(m), []);
  assertEquals(m.rules[0].notDone, [
    "IPv6 clients of any local address are refused: the rule has no IPv6 target, and a router cannot translate between families",
  ]);
  const nft = renderNftables(nftModel(m), OPTIONS);
  const star = nft.indexOf("meta nfproto ipv6 fib daddr type local tcp dport 85 drop");
  const later = nft.indexOf("ip6 daddr 2001:db8:a::10 tcp dport 85 log prefix");
  assert(star > 0 && later > star, nft);
  const pf = renderPf(pfModel(m), OPTIONS);
  const pfStar = pf.indexOf("block in quick inet6 proto tcp from any to self port 85");
  const pfLater = pf.indexOf(
    "pass in log quick inet6 proto tcp from any to 2001:db8:a::10 port 85",
  );
  assert(pfStar > 0 && pfLater > pfStar, pf);
});

Deno.test("export: a family the rule's clients lack still gets the default deny", () => {
  const m = model(`
[[rule]]
name = "v4-only"
listen = "*:443"
from = "198.51.100.0/24"
bounce_to = ["203.0.113.200:443", "[2001:db8:5::2]:443"]
`);
  const nft = renderNftables(nftModel(m), OPTIONS);
  assertIncludes(nft, "meta nfproto ipv6 fib daddr type local tcp dport 443 drop");
  assertEquals(nft.includes("ip6 saddr"), false);
  assertIncludes(
    renderPf(pfModel(m), OPTIONS),
    "block in log quick inet6 proto tcp to self port 443",
  );
});

Deno.test("export: a listen interface is its addresses here in nftables, the interface in pf", () => {
  const text = `[[rule]]\nname = "onr0"\nlisten = "r0:83"\nbounce_to = "203.0.113.200:8080"\n`;
  const here = model(text, { r0: ["198.51.100.1", "2001:db8:c::1"] });
  const nft = nftModel(here);
  assertEquals(exportProblems(nft), []);
  const out = renderNftables(nft, OPTIONS);
  assertIncludes(
    out,
    `ip daddr 198.51.100.1 tcp dport 83 log prefix "portbounce onr0: " accept comment "r0 at export"`,
  );
  assertIncludes(out, `ip6 daddr 2001:db8:c::1 tcp dport 83`);
  assertEquals(out.includes("iifname"), false);
  assertIncludes(renderPf(pfModel(here), OPTIONS), "to (r0) port 83 rdr-to 203.0.113.200");
  const bare = nftModel(model(text, { r0: [] }));
  assertEquals(exportProblems(bare).map((p) => p.message), [
    `rule "onr0" (rule #1): listen: interface r0 has no address here: nftables matches addresses, so export on the router (or name the address); pf names the interface`,
  ]);
});

Deno.test("export: a rule on loopback and elsewhere with a remote target cannot be done (its loopback part)", () => {
  const m = model(
    `[[rule]]\nname = "mixed"\nlisten = ["127.0.0.1:84", "203.0.113.10:84"]\nbounce_to = "203.0.113.200:8080"\n`,
  );
  assertEquals(exportProblems(m).length, 1);
  assertIncludes(exportProblems(m)[0].message, "but the rule listens on loopback");
});

Deno.test("export: --interface is not put on this host's own loopback lines", () => {
  const m = model(
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:8080"\nfrom = "127.0.0.5"\nbounce_to = "127.0.0.1:8081"\n`,
  );
  const out = renderNftables(nftModel(m), { ...OPTIONS, interface: "r0" });
  assertEquals(out.includes("iifname"), false);
});

Deno.test("export: a throttle admits its count at once; one nft cannot write exactly is said", () => {
  const m = model(`
[[rule]]
name = "a"
listen = "203.0.113.10:80"
bounce_to = "203.0.113.200:80"
throttle = "20/1s"

[[rule]]
name = "b"
listen = "203.0.113.10:81"
protocol = ["tcp", "udp"]
bounce_to = "203.0.113.200:81"
throttle = "50/500ms"
`);
  const nft = nftModel(m);
  const out = renderNftables(nft, OPTIONS);
  assertIncludes(out, "limit rate over 20/second burst 20 packets drop");
  assertIncludes(out, "limit rate over 6000/minute burst 50 packets drop");
  assertEquals(nft.rules[1].notDone.at(-1), "throttle 50/500ms: the router limits 6000/minute");
  const pf = pfModel(m);
  assertEquals(
    pf.rules[0].notDone.at(-1),
    "throttle 20/1s: pf limits the rate per client (max-src-conn-rate 20/1), not for the rule as a whole",
  );
  assertEquals(
    pf.rules[1].notDone.at(-1),
    "throttle 50/500ms: pf limits the rate per client (max-src-conn-rate 50/1), not for the rule as a whole, in whole seconds, and for TCP only",
  );
});

Deno.test("export --format pf: source NAT out of $pb_out; rules sharing a target with other sources are said", () => {
  const m = model(`
[server]
source = "rold"

[[rule]]
name = "a"
listen = "203.0.113.10:80"
bounce_to = "203.0.113.200:8080"

[[rule]]
name = "b"
listen = "203.0.113.10:81"
bounce_to = "203.0.113.200:8080"
source = "203.0.113.130"
`);
  const pf = pfModel(m, true);
  assertEquals(
    pf.rules[1].notDone.at(-1),
    "its own source toward 203.0.113.200: an earlier rule sends to the same target from another source, and pf translates by target, so the last line decides for both",
  );
  const out = renderPf(pf, { ...OPTIONS, masquerade: true });
  assertIncludes(out, 'pb_out = "egress"');
  assertIncludes(out, "match out on rold inet proto tcp to 203.0.113.200 port 8080 nat-to (rold)");
  assertIncludes(
    out,
    "match out on $pb_out inet proto tcp to 203.0.113.200 port 8080 nat-to 203.0.113.130",
  );
});

Deno.test("export: targets of a rule left out stay guarded on the forward path", () => {
  const m = nftModel(model(`
[[rule]]
name = "six"
listen = "[2001:db8:a::10]:80"
bounce_to = "203.0.113.200:9000"
`));
  assertEquals(exportProblems(m).length, 1);
  assertIncludes(renderNftables(m, OPTIONS), "ip daddr 203.0.113.200 tcp dport 9000 drop");
  assertIncludes(
    renderPf(m, OPTIONS),
    "block in log quick inet proto tcp to 203.0.113.200 port 9000",
  );
});
