/**
 * The rule index returns exactly the binding the linear scan does: first
 * match in file order, deny by default, and the per-address `only` of
 * wildcard sockets, on generated rule sets with overlapping networks of both
 * families, blocks before passes, and clients near every network's edges.
 */
import fc from "fast-check";
import { assertEquals } from "../assert.ts";
import { type IpAddress, type Network, parseIp, parseNetwork } from "../../src/config/network.ts";
import type { Rule } from "../../src/config/types.ts";
import { RuleIndex } from "../../src/rules/index.ts";
import { firstMatch, firstMatchLinear } from "../../src/rules/match.ts";
import type { Binding } from "../../src/rules/plan.ts";
import { loadRules } from "../fixtures/rules.ts";

const BASE_RULE: Rule = loadRules(
  `[[rule]]\nname = "base"\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:81"\n`,
).rules[0];

function ip(text: string): IpAddress {
  const parsed = parseIp(text);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed;
}

/** A network given as its base address and prefix; host bits are cleared. */
function network(address: IpAddress, prefix: number): Network {
  const bytes = address.toByteArray();
  const bits = bytes.length * 8;
  for (let bit = prefix; bit < bits; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  const base = bytes.length === 4 ? bytes.join(".") : v6Text(bytes);
  const parsed = parseNetwork(`${base}/${prefix}`);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed;
}

function v6Text(bytes: number[]): string {
  const parts = [];
  for (let i = 0; i < 16; i += 2) parts.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return parts.join(":");
}

// Addresses from a small neighbourhood, so that networks overlap and clients hit their edges.
const v4 = fc.tuple(
  fc.constantFrom(10, 192, 203),
  fc.integer({ min: 0, max: 3 }),
  fc.nat(255),
  fc.nat(255),
)
  .map(([a, b, c, d]) => ip(`${a}.${b}.${c}.${d}`));
const v6 = fc.tuple(fc.constantFrom(0x2001, 0xfd00), fc.nat(3), fc.nat(0xffff), fc.nat(0xffff))
  .map(([a, b, c, d]) =>
    ip(`${a.toString(16)}:db8:${b.toString(16)}::${c.toString(16)}:${d.toString(16)}`)
  );
const anyAddress = fc.oneof(v4, v6);
const net = fc.oneof(
  fc.tuple(v4, fc.integer({ min: 0, max: 32 })),
  fc.tuple(v6, fc.integer({ min: 0, max: 128 })),
).map(([address, prefix]) => network(address, prefix));
const only = fc.constantFrom<string | null>(
  null,
  null,
  null,
  "0.0.0.0",
  "127.0.0.1",
  "127.0.0.2",
  "::1",
);

const bindings = fc.array(
  fc.record({
    action: fc.constantFrom<"pass" | "block">("pass", "block"),
    from: fc.array(net, { minLength: 1, maxLength: 4 }),
    only,
  }),
  { minLength: 0, maxLength: 60 },
).map((rules) =>
  rules.map(({ action, from, only }, i): Binding => ({
    rule: { ...BASE_RULE, name: `r${i}`, action, from } as Rule,
    targets: [],
    only,
    source: null,
  }))
);
const local = fc.constantFrom<string | null>(null, "127.0.0.1", "127.0.0.2", "10.0.0.1", "::1")
  .map((text) => (text === null ? null : ip(text)));

/** Clients at and beside each network's edges, where an off-by-one would show. */
function edgesOf(list: readonly Binding[]): IpAddress[] {
  const found: IpAddress[] = [];
  for (const { rule } of list) {
    for (const { address, prefix } of rule.from) {
      const bytes = address.toByteArray();
      const bits = bytes.length * 8;
      const last = [...bytes];
      for (let bit = prefix; bit < bits; bit++) last[bit >> 3] |= 0x80 >> (bit & 7);
      for (const edge of [bytes, last]) {
        for (const step of [-1, 0, 1] as const) {
          const moved = step === 0 ? edge : nudge(edge, step);
          if (moved) found.push(ip(moved.length === 4 ? moved.join(".") : v6Text(moved)));
        }
      }
    }
  }
  return found;
}

/** The address one above or below, or null past either end of the space. */
function nudge(bytes: number[], step: 1 | -1): number[] | null {
  const out = [...bytes];
  for (let i = out.length - 1; i >= 0; i--) {
    out[i] += step;
    if (out[i] >= 0 && out[i] <= 255) return out;
    out[i] = step === 1 ? 0 : 255;
  }
  return null;
}

Deno.test("rule index: the same first match as the linear scan, for any rules, client and local address", () => {
  fc.assert(
    fc.property(
      bindings,
      fc.array(anyAddress, { maxLength: 20 }),
      local,
      (list, clients, reached) => {
        const index = new RuleIndex(list);
        for (const client of [...clients, ...edgesOf(list)]) {
          const expected = firstMatchLinear(list, client, reached);
          const got = index.firstMatch(client, reached);
          if (got !== expected) {
            throw new Error(
              `${client} reaching ${reached}: index gave ${got?.rule.name}, the scan ${expected?.rule.name}`,
            );
          }
        }
      },
    ),
    { seed: 24, numRuns: 400 },
  );
});

Deno.test("rule index: a block before a pass, deny by default, and the wildcard socket's own addresses", () => {
  const list: Binding[] = [];
  const rule = (
    name: string,
    action: "pass" | "block",
    from: string[],
    only: string | null = null,
  ) => ({
    rule: {
      ...BASE_RULE,
      name,
      action,
      from: from.map((text) => parseNetwork(text) as Network),
    } as Rule,
    targets: [],
    only,
    source: null,
  });
  list.push(
    rule("lab-out", "block", ["10.1.0.0/16"]),
    rule("office", "pass", ["10.0.0.0/8", "2001:db8::/32"]),
    rule("v4-only", "pass", ["203.0.113.0/24"], "0.0.0.0"),
    rule("second-address", "pass", ["0.0.0.0/0"], "127.0.0.2"),
  );
  const index = new RuleIndex(list);
  const name = (client: string, reached: string | null = null) =>
    index.firstMatch(ip(client), reached === null ? null : ip(reached))?.rule.name;
  assertEquals(name("10.1.2.3"), "lab-out");
  assertEquals(name("10.2.2.3"), "office");
  assertEquals(name("2001:db8::7"), "office");
  assertEquals(name("198.51.100.1"), undefined, "no rule: deny by default");
  assertEquals(name("203.0.113.5"), undefined, "an address-bound rule needs the address reached");
  assertEquals(name("203.0.113.5", "127.0.0.1"), "v4-only");
  assertEquals(name("203.0.113.5", "::1"), undefined);
  assertEquals(name("198.51.100.1", "127.0.0.2"), "second-address");
  assertEquals(name("10.1.2.3", "127.0.0.2"), "lab-out", "earlier rules still come first");
});

Deno.test("firstMatch uses the index past 16 rules and agrees with the scan on 10,000", () => {
  const list: Binding[] = [];
  for (let i = 0; i < 10_000; i++) {
    const from = [parseNetwork(`10.${(i >> 8) & 255}.${i & 255}.0/24`) as Network];
    list.push({
      rule: { ...BASE_RULE, name: `r${i}`, from } as Rule,
      targets: [],
      only: null,
      source: null,
    });
  }
  for (const client of ["10.0.0.1", "10.39.15.200", "10.39.16.1", "11.0.0.1"]) {
    assertEquals(firstMatch(list, ip(client)), firstMatchLinear(list, ip(client)));
  }
  assertEquals(firstMatch(list, ip("10.39.15.9"))?.rule.name, "r9999");
});
