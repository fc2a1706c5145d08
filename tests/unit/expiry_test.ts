/**
 * Rules that end (`until`): the forms a date may take, the ones refused, the
 * warnings near the end, and the rules in force once it passed (in this
 * isolate and in a worker's). The clock is passed in.
 */
import { assertEquals } from "../assert.ts";
import { loadRules, passRule, problems } from "../fixtures/rules.ts";
import { expiryWarnings, nextExpiry } from "../../src/rules/expiry.ts";
import { loadRuleText, rebuildPlan, withoutExpired } from "../../src/server/rule_file.ts";

const rule = (until: string, name = "r", port = 8080) =>
  passRule({ name, listen: `127.0.0.1:${port}`, target: 80, extra: `until = ${until}` });

Deno.test("until: an offset date-time, a local date-time, a date (the start of that day, local), or the same as a string", () => {
  const at = (until: string) => loadRules(rule(until)).rules[0].until;
  assertEquals(at("2026-12-31T18:00:00Z"), Date.UTC(2026, 11, 31, 18));
  assertEquals(at("2026-12-31T18:00:00+02:00"), Date.UTC(2026, 11, 31, 16));
  assertEquals(at("2026-12-31T18:00:00"), new Date(2026, 11, 31, 18).getTime());
  assertEquals(at("2026-12-31"), new Date(2026, 11, 31).getTime());
  assertEquals(at('"2026-12-31T18:00:00Z"'), Date.UTC(2026, 11, 31, 18));
  assertEquals(loadRules(passRule({ listen: "127.0.0.1:1", target: 2 })).rules[0].until, null);
});

Deno.test("until: a time without a date, a word, a number or a day that does not exist is refused, saying where", () => {
  const expected =
    "expected a date-time such as 2026-12-31T18:00:00Z, 2026-12-31T18:00:00 (local time) or 2026-12-31 (the start of that day)";
  assertEquals(problems(rule("18:00:00")), [
    `rules.toml:5: rule "r" (rule #1): until: ${expected}, got a time of day without a date`,
  ]);
  assertEquals(problems(rule('"tomorrow"')), [
    `rules.toml:5: rule "r" (rule #1): until: ${expected}, got "tomorrow"`,
  ]);
  assertEquals(problems(rule("12")), [
    `rules.toml:5: rule "r" (rule #1): until: ${expected}, got number 12`,
  ]);
  // Written bare, the parser would roll it over to March 2: read as written, refused.
  assertEquals(problems(rule("2026-02-30")), [
    `rules.toml:5: rule "r" (rule #1): until: 2026-02-30 is no day of the calendar`,
  ]);
  assertEquals(problems(rule("2026-02-30T10:00:00Z")).length, 1);
  assertEquals(problems(rule('"2026-02-30"')), [
    `rules.toml:5: rule "r" (rule #1): until: 2026-02-30 is no day of the calendar`,
  ]);
  assertEquals(
    problems(rule("2026-13-01"))[0].startsWith("rules.toml:5:9: TOML syntax error"),
    true,
  );
  // In [defaults] it would make every rule end at once: a rule's own key only.
  assertEquals(
    problems(`[defaults]\nuntil = 2026-12-31\n${passRule({ listen: "127.0.0.1:1", target: 2 })}`)[0]
      .includes("until: unknown key"),
    true,
  );
});

Deno.test("until: warned within 7 days and once passed; the next end is known", () => {
  const T = Date.UTC(2026, 11, 6, 12);
  const config = loadRules(
    rule("2026-12-06T15:30:00Z", "soon", 1) + rule("2026-12-01T00:00:00Z", "gone", 2) +
      rule("2027-06-01T00:00:00Z", "later", 3),
  );
  assertEquals(expiryWarnings(config, T).map((w) => `${w.where}: ${w.message}`), [
    'rules.toml:5: rule "soon" (rule #1): until: it ends at 2026-12-06T15:30:00.000Z, in 3h; then it takes no new session',
    'rules.toml:10: rule "gone" (rule #2): until: it ended at 2026-12-01T00:00:00.000Z and passes nothing (remove it, or move until)',
  ]);
  assertEquals(nextExpiry(config.rules, T), Date.UTC(2026, 11, 6, 15, 30));
  assertEquals(nextExpiry(config.rules, Date.UTC(2027, 6, 1)), null);
});

Deno.test("until: once passed, the rule is out of the plan, in this isolate and as a worker rebuilds it", async () => {
  const text = rule("2026-12-01T00:00:00Z", "gone", 18081) +
    rule("2027-06-01T00:00:00Z", "kept", 18082) +
    passRule({ name: "shares", listen: "127.0.0.1:18081", target: 81 });
  const loaded = await loadRuleText(text, "rules.toml");
  if (!loaded.ok) throw new Error("valid");
  const { loaded: active, expired } = withoutExpired(loaded, Date.UTC(2026, 11, 6));
  assertEquals(expired.map((r) => r.name), ["gone"]);
  assertEquals(active.config.rules.map((r) => r.name), ["kept", "shares"]);
  // Its listener stays for the other rule that uses it, with that rule alone.
  assertEquals(
    active.listeners.map((l) => [l.key, l.bindings.map((b) => b.rule.name)]),
    [["tcp 127.0.0.1:18082", ["kept"]], ["tcp 127.0.0.1:18081", ["shares"]]],
  );
  const rebuilt = rebuildPlan(active.inputs);
  assertEquals(rebuilt.config.rules.map((r) => r.name), ["kept", "shares"]);
  assertEquals(rebuilt.listeners.map((l) => l.key), active.listeners.map((l) => l.key));
  // Before it ends, nothing changes.
  assertEquals(withoutExpired(loaded, Date.UTC(2026, 10, 1)).loaded, loaded);
});
