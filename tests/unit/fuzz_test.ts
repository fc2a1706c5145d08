/**
 * Property-based fuzzing of the rule-file loader with fast-check: whatever
 * the input, the result is a valid rule set or problems that each say where,
 * never an exception.
 */
import fc from "fast-check";
import { stringify } from "smol-toml";
import { assert } from "../assert.ts";
import { parseConfig, RULE_KEYS, SERVER_KEYS } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";

const services = builtInServices();

function checkOutcome(text: string): void {
  const result = parseConfig(text, "fuzz.toml", services);
  if (result.ok) {
    for (const rule of result.config.rules) {
      assert(rule.listen.length > 0, "a valid rule listens somewhere");
      assert(rule.action === "block" || rule.bounceTo !== undefined, "a pass rule has a target");
    }
    return;
  }
  assert(result.problems.length > 0, "a failure names at least one problem");
  for (const problem of result.problems) {
    assert(problem.where.startsWith("fuzz.toml"), `where names the file: ${problem.where}`);
    assert(problem.message.length > 0 && problem.message.length <= 2_000, "a readable message");
  }
}

Deno.test("fuzz: arbitrary text never crashes the loader", () => {
  fc.assert(fc.property(fc.string({ unit: "binary", maxLength: 400 }), checkOutcome), {
    numRuns: 2_000,
  });
});

/** Values that look like what rule files hold, valid or not. */
const value = fc.oneof(
  fc.constantFrom(
    "127.0.0.1:80",
    "[::1]:53",
    "*:8080",
    "eth0:22",
    "host.example:http",
    "10.0.0.0/8",
    "::/0",
    "0/0",
    "udp",
    "tcp",
    "pass",
    "block",
    "10s",
    "250ms",
    "50/1s",
    "127.0.0.1:8000-8010",
    "[2001:db8::1]",
    "::ffff:10.0.0.0/104",
    "fe80::1%eth0",
    "010.0.0.1",
    "300.1.1.1:1",
  ),
  fc.string({ maxLength: 30 }),
  fc.integer({ min: -10, max: 70_000 }),
  fc.double(),
  fc.boolean(),
  fc.array(fc.constantFrom("127.0.0.1:1", "10.0.0.0/8", "connect", "tcp", "udp", "x"), {
    maxLength: 4,
  }),
);

// Every real key, and one misspelt one.
const ruleKeys = [...RULE_KEYS, "lsten"];
const table = fc.dictionary(fc.constantFrom(...ruleKeys), value, { maxKeys: 8 });
const serverTable = fc.dictionary(
  fc.constantFrom(...SERVER_KEYS, "colour"),
  value,
  { maxKeys: 4 },
);

Deno.test("fuzz: rule files built from plausible pieces are accepted or explained", () => {
  fc.assert(
    fc.property(
      fc.record({ server: serverTable, defaults: table, rule: fc.array(table, { maxLength: 5 }) }, {
        requiredKeys: [],
      }),
      (document) => checkOutcome(stringify(document)),
    ),
    { numRuns: 2_000 },
  );
});
