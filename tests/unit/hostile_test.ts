/**
 * Oversized and odd rule files: each is refused with a located problem (or
 * accepted when it is valid), never a crash, a hang or a megabyte of message.
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { problems } from "../fixtures/rules.ts";
import { parseConfig } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";

const services = builtInServices();
const rule = (extra = "") =>
  `[[rule]]\nlisten = "127.0.0.1:1"\nbounce_to = "127.0.0.1:2"\n${extra}`;

Deno.test("deep nesting is refused, not a stack overflow", () => {
  assertIncludes(
    problems("x = " + "[".repeat(100_000) + "]".repeat(100_000))[0],
    "excessively nested",
  );
  assertIncludes(
    problems("x = " + "{a = ".repeat(5_000) + "1" + "}".repeat(5_000))[0],
    "excessively nested",
  );
});

Deno.test("huge arrays and many rules load (and only fail on what is wrong)", () => {
  const ports = Array.from({ length: 50_000 }, (_, i) => `"127.0.0.1:${(i % 65_535) + 1}"`).join(
    ",",
  );
  const big = parseConfig(
    `[[rule]]\nlisten = [${ports}]\nbounce_to = "127.0.0.1:1"\n`,
    "h.toml",
    services,
  );
  assert(big.ok);
  assertEquals(big.config.rules[0].listen.length, 50_000);
  const many = parseConfig(
    Array.from({ length: 2_000 }, () => rule()).join(""),
    "h.toml",
    services,
  );
  assert(many.ok);
  assertEquals(many.config.rules.length, 2_000);
});

Deno.test("a 1 MB string gives a short message", () => {
  const [message] = problems(rule(`name = "${"a".repeat(1 << 20)}"\n`));
  assertIncludes(message, "is not a usable name");
  assert(message.length <= 1_100, `message of ${message.length} characters`);
  const [listen] = problems(
    `[[rule]]\nlisten = "${"9".repeat(1 << 20)}"\nbounce_to = "127.0.0.1:2"\n`,
  );
  assert(listen.length <= 1_100);
});

Deno.test("duplicate keys and tables, NUL bytes, odd types", () => {
  assertIncludes(
    problems('[server]\nlog_level = "info"\nlog_level = "debug"\n')[0],
    "rules.toml:3:1",
  );
  assertIncludes(problems("[server]\n[server]\n")[0], "TOML syntax error");
  assertIncludes(problems('a = "\u0000"\n')[0], "control characters");
  assertIncludes(problems(rule("max_sessions = 1979-05-27T07:32:00Z\n"))[0], "got a date");
  assertIncludes(problems(rule("max_sessions = inf\n"))[0], "expected a whole number");
  assertIncludes(problems(rule("idle_timeout = nan\n"))[0], "expected a duration");
  assertIncludes(problems(rule("from = [1, 2]\n"))[0], "expected a string or a list of strings");
});

Deno.test("address edge cases: /0, /32, /128, mapped, zones, leading zeros", () => {
  const ok = (from: string) =>
    parseConfig(rule(`from = ${JSON.stringify(from)}\n`), "h.toml", services).ok;
  for (
    const good of [
      "0.0.0.0/0",
      "::/0",
      "192.0.2.7/32",
      "2001:db8::1/128",
      "::ffff:192.0.2.0/120",
      "0.0.0.0",
    ]
  ) {
    assert(ok(good), good);
  }
  for (
    const bad of [
      "192.0.2.7/33",
      "fe80::1%eth0/64",
      "01.2.3.4/32",
      "1.2.3/24",
      "::1/129",
      "1.2.3.4/08a",
    ]
  ) {
    assert(!ok(bad), bad);
  }
});
