import { loadRules } from "../fixtures/rules.ts";
import { assertEquals } from "../assert.ts";
import { diffListeners, diffRules } from "../../src/rules/diff.ts";
import { buildPlan } from "../../src/rules/plan.ts";

const before = loadRules(`
[[rule]]
name = "web"
listen = "127.0.0.1:8080"
bounce_to = "127.0.0.1:80"
[[rule]]
name = "ssh"
listen = "127.0.0.1:2222"
bounce_to = "127.0.0.1:22"
[[rule]]
name = "mail"
listen = "127.0.0.1:2525"
bounce_to = "127.0.0.1:25"
`);

const after = loadRules(`
[[rule]]
name = "ssh"
listen = "127.0.0.1:2222"
bounce_to = "127.0.0.1:22"
[[rule]]
name = "web"
listen = "127.0.0.1:8080"
bounce_to = "127.0.0.1:8000"
[[rule]]
name = "dns"
protocol = "udp"
listen = "127.0.0.1:5353"
bounce_to = "127.0.0.1:53"
`);

Deno.test("listener diff: added, kept (with their new plans) and removed", () => {
  const current = buildPlan(before, new Map()).listeners.map((l) => l.key);
  const next = buildPlan(after, new Map()).listeners;
  const diff = diffListeners(current, next);
  assertEquals(diff.added.map((l) => l.key), ["udp 127.0.0.1:5353"]);
  assertEquals(diff.kept.map((l) => l.key), ["tcp 127.0.0.1:2222", "tcp 127.0.0.1:8080"]);
  assertEquals(diff.removed, ["tcp 127.0.0.1:2525"]);
  assertEquals(diff.kept[1].bindings[0].targets, [{ host: "127.0.0.1", port: 8000 }]);
});

Deno.test("rule diff: moving a rule in the file is no change; a new target is", () => {
  assertEquals(diffRules(before.rules, after.rules), {
    added: ["dns"],
    changed: ["web"],
    removed: ["mail"],
    unchanged: ["ssh"],
  });
  assertEquals(diffRules(before.rules, before.rules).unchanged, ["web", "ssh", "mail"]);
});

Deno.test("rule diff: from, log and limits count as changes", () => {
  const base = '[[rule]]\nname = "r"\nlisten = "127.0.0.1:1"\nbounce_to = "127.0.0.1:2"\n';
  for (
    const extra of [
      'from = "10.0.0.0/8"',
      'log = ["error"]',
      "max_sessions = 3",
      'idle_timeout = "5s"',
    ]
  ) {
    assertEquals(
      diffRules(loadRules(base).rules, loadRules(base + extra).rules).changed,
      ["r"],
      extra,
    );
  }
  // The same log events in another order are the same rule.
  assertEquals(
    diffRules(
      loadRules(base + 'log = ["error", "block"]').rules,
      loadRules(base + 'log = ["block", "error"]').rules,
    )
      .unchanged,
    ["r"],
  );
});
