/**
 * A reload reads only what changed: a rule whose table, name and context
 * are the same is kept (the same object, or a copy where it moved), an
 * unchanged file keeps its rules and plan, and the file is read into room
 * for its size.
 */
import { assert, assertEquals } from "../assert.ts";

/** The very same object (a rule or plan kept, not read again). */
const same = (a: unknown, b: unknown) => assert(a === b, "expected the same object");
/** Another object (read again, or a copy). */
const other = (a: unknown, b: unknown) => assert(a !== b, "expected another object");
import { type LoadResult, parseConfig, parseConfigSteps } from "../../src/config/load.ts";
import { loadServices } from "../../src/config/services.ts";
import { runSteps } from "../../src/config/work_steps.ts";
import { diffRules, fingerprint } from "../../src/rules/diff.ts";
import { loadRuleText, readUpTo } from "../../src/server/rule_file.ts";

const services = loadServices();

function rule(name: string, port: number, extra = ""): string {
  return `[[rule]]\nname = "${name}"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:80"\n${extra}\n`;
}

function parse(text: string, previous?: LoadResult): Extract<LoadResult, { ok: true }> {
  const result = runSteps(
    parseConfigSteps(text, "rules.toml", services, previous?.ok ? previous.reuse : undefined),
  );
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result;
}

Deno.test("reuse: unchanged rules are kept as they are, a changed one is read again", () => {
  const before = parse(rule("a", 1001) + rule("b", 1002) + rule("c", 1003));
  const after = parse(rule("a", 1001) + rule("b", 1012) + rule("c", 1003), before);
  same(after.config.rules[0], before.config.rules[0]);
  other(after.config.rules[1], before.config.rules[1]);
  assertEquals(after.config.rules[1].listen[0].ports.first, 1012);
  same(after.config.rules[2], before.config.rules[2]);
  assertEquals(diffRules(before.config.rules, after.config.rules), {
    added: [],
    changed: ["b"],
    removed: [],
    unchanged: ["a", "c"],
  });
  // Everything equals a parse from nothing.
  assertEquals(after.config, parse(rule("a", 1001) + rule("b", 1012) + rule("c", 1003)).config);
});

Deno.test("reuse: a rule that moved is a copy at its new place and lines, the same otherwise", () => {
  const before = parse(rule("a", 1001) + rule("b", 1002, 'log = ["error"]'));
  const after = parse(
    `# a comment\n${rule("new", 1000)}${rule("a", 1001)}${rule("b", 1002, 'log = ["error"]')}`,
    before,
  );
  const [, a, b] = after.config.rules;
  other(a, before.config.rules[0]);
  assertEquals([a.index, b.index], [2, 3]);
  assertEquals(
    b.lines,
    parse(
      `# a comment\n${rule("new", 1000)}${rule("a", 1001)}${rule("b", 1002, 'log = ["error"]')}`,
    ).config.rules[2].lines,
  );
  assertEquals(fingerprint(a), fingerprint(before.config.rules[0]));
  assertEquals(diffRules(before.config.rules, after.config.rules).unchanged, ["a", "b"]);
});

Deno.test("reuse: a change of what rules inherit reads every rule again", () => {
  const before = parse(`[defaults]\nidle_timeout = "1m"\n${rule("a", 1001)}`);
  const after = parse(`[defaults]\nidle_timeout = "2m"\n${rule("a", 1001)}`, before);
  other(after.config.rules[0], before.config.rules[0]);
  assertEquals(after.config.rules[0].idleTimeoutMs, 120_000);
  // A rule without a name is named by its place: moved, it is another rule.
  const unnamed = `[[rule]]\nlisten = "127.0.0.1:1005"\nbounce_to = "127.0.0.1:80"\n`;
  const first = parse(unnamed);
  const second = parse(rule("x", 1000) + unnamed, first);
  assertEquals(second.config.rules[1].name, "rule-2");
  assertEquals(diffRules(first.config.rules, second.config.rules).removed, ["rule-1"]);
});

Deno.test("reuse: a table that no longer holds is refused as from nothing", () => {
  const before = parse(rule("a", 1001));
  const broken = runSteps(
    parseConfigSteps(rule("a", 1001) + rule("a", 1002), "rules.toml", services, before.reuse),
  );
  assertEquals(broken, parseConfig(rule("a", 1001) + rule("a", 1002), "rules.toml", services));
  assert(!broken.ok);
});

Deno.test("an unchanged text keeps its rules and plan; a changed one keeps its unchanged rules", async () => {
  const text = rule("a", 1001) + rule("b", 1002);
  const first = await loadRuleText(text, "rules.toml");
  assert(first.ok);
  const again = await loadRuleText(text, "rules.toml", { previous: first });
  assert(again.ok);
  same(again.config, first.config);
  same(again.listeners, first.listeners);
  const changed = await loadRuleText(rule("a", 1001) + rule("b", 1003), "rules.toml", {
    previous: again,
  });
  assert(changed.ok);
  other(changed.listeners, first.listeners);
  same(changed.config.rules[0], first.config.rules[0]);
  // Another file of the same text is read from nothing.
  const elsewhere = await loadRuleText(text, "other.toml", { previous: first });
  assert(elsewhere.ok);
  other(elsewhere.config.rules[0], first.config.rules[0]);
});

Deno.test("a rule file is read into room for its size, grown if it grew, refused past the limit", async () => {
  /** A reader of `content`, a few bytes per read. */
  const reader = (content: Uint8Array) => {
    let at = 0;
    return {
      read(into: Uint8Array): Promise<number | null> {
        if (at === content.length) return Promise.resolve(null);
        const n = Math.min(into.length, 7, content.length - at);
        into.set(content.subarray(at, at + n));
        at += n;
        return Promise.resolve(n);
      },
    };
  };
  const content = new TextEncoder().encode("x".repeat(100));
  for (const hint of [0, 1, 99, 100, 150]) {
    assertEquals(await readUpTo(reader(content), hint, 1_000), content, `size said: ${hint}`);
  }
  assertEquals(await readUpTo(reader(content), 10, 99), null, "past the limit");
  assertEquals(await readUpTo(reader(content), 10, 100), content, "at the limit");
});

Deno.test("reuse: a value JSON would not tell apart is a change (a date and the same text)", () => {
  const base = `[[rule]]\nname = "a"\nlisten = "127.0.0.1:1001"\nbounce_to = "127.0.0.1:80"\n`;
  const dated = parse(`${base}until = 2030-01-01\n`);
  const quoted = parse(`${base}until = "2030-01-01"\n`, dated);
  other(quoted.config.rules[0], dated.config.rules[0]);
  // Both read alike: the same end.
  assertEquals(quoted.config.rules[0].until, dated.config.rules[0].until);
});

Deno.test("reuse: what a rule inherits is compared whole: [defaults] log, a set, is a change", () => {
  const rule = `[[rule]]\nname = "a"\nlisten = "127.0.0.1:1001"\nbounce_to = "127.0.0.1:80"\n`;
  const before = parse(`[defaults]\nlog = ["error"]\n${rule}`);
  const after = parse(`[defaults]\nlog = ["block"]\n${rule}`, before);
  other(after.config.rules[0], before.config.rules[0]);
  assertEquals([...after.config.rules[0].log], ["block"]);
});

Deno.test("reuse: a table holding a date is read again: a day that does not exist is refused", () => {
  const rule = `[[rule]]\nname = "a"\nlisten = "127.0.0.1:1001"\nbounce_to = "127.0.0.1:80"\n`;
  const before = parse(`${rule}until = 2030-03-02\n`);
  // The parser rolls February 30 over to March 2: only the line as written shows it.
  const after = runSteps(
    parseConfigSteps(`${rule}until = 2030-02-30\n`, "rules.toml", services, before.reuse),
  );
  assert(!after.ok, "2030-02-30 was kept from 2030-03-02");
});

Deno.test("reuse: another service table reads the rules again", () => {
  const text = `[[rule]]\nname = "a"\nlisten = "127.0.0.1:web"\nbounce_to = "127.0.0.1:80"\n`;
  const one = new Map([["web", { tcp: 8080 }]]);
  const two = new Map([["web", { tcp: 9090 }]]);
  const before = runSteps(parseConfigSteps(text, "rules.toml", one));
  assert(before.ok);
  const after = runSteps(parseConfigSteps(text, "rules.toml", two, before.reuse));
  assert(after.ok);
  assertEquals(after.config.rules[0].listen[0].ports.first, 9090);
});
