/**
 * Removing one rule from a rule file's text (`portbounce retire`): whatever
 * the file looks like, the rest stays byte for byte and parses to the same
 * other rules. Property-based, with fast-check.
 */
import fc from "fast-check";
import { assert, assertEquals } from "../assert.ts";
import { removeRule } from "../../src/config/edit.ts";
import { parseConfig } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";

const services = builtInServices();

function rulesOf(text: string) {
  const parsed = parseConfig(text, "rules.toml", services);
  assert(parsed.ok, `${JSON.stringify(!parsed.ok && parsed.problems)}\n${text}`);
  return parsed.config.rules.map((r) => ({
    name: r.name,
    action: r.action,
    listen: r.listen.map((l) => l.text),
    targets: r.action === "pass" ? r.bounceTo.map((t) => t.text) : [],
    health: r.healthCheck?.intervalMs ?? null,
  }));
}

const comment = fc.constantFrom("# www moves", "  # the lab", "#", "# [[rule]] in a comment");
const blank = fc.constantFrom("", "   ");
const header = fc.constantFrom("[[rule]]", "[[ rule ]]", "  [[rule]]  # next", "[[rule]]\t");

/** One rule's lines: comments above, header, keys in some order, blank lines inside. */
const ruleBlock = (n: number) =>
  fc.record({
    above: fc.array(comment, { maxLength: 2 }),
    header,
    keys: fc.shuffledSubarray([
      `listen = "127.0.0.1:${8000 + n}"`,
      `listen = [\n  "127.0.0.2:${8000 + n}", # trailing\n  "127.0.0.3:${8000 + n}",\n]`,
      `log = []`,
      `idle_timeout = "1h" # inline`,
      `note_only = """\n[[rule]]\nname = "not a rule"\n"""`,
    ], { minLength: 1, maxLength: 3 }),
    inside: fc.array(fc.oneof(comment, blank), { maxLength: 2 }),
    // Its health check as a sub-table after its keys: it belongs to this rule, not the next.
    subtable: fc.boolean(),
    after: fc.array(blank, { maxLength: 2 }),
  }).map(({ above, header, keys, inside, subtable, after }) => {
    // One listen key, and the string of the decoy is not a key of a rule: keep it valid.
    const listen = keys.find((k) => k.startsWith("listen")) ?? `listen = "127.0.0.1:${8000 + n}"`;
    const others = keys.filter((k) => !k.startsWith("listen") && !k.startsWith("note_only"));
    const decoy = keys.some((k) => k.startsWith("note_only"));
    return [
      ...above,
      header,
      `name = "r${n}"`,
      ...inside,
      listen,
      `bounce_to = "127.0.0.9:${9000 + n}"`,
      ...others,
      ...(decoy ? [`# a multi-line string in a comment is no string: """`] : []),
      ...(subtable ? ["[rule.health_check]", `interval = "${n}s"`] : []),
      ...after,
    ].join("\n");
  });

const file = fc.integer({ min: 1, max: 5 }).chain((count) =>
  fc.record({
    preamble: fc.constantFrom(
      "",
      "# rules of the move\n\n",
      '[server]\nstatus = "127.0.0.1:0"\n\n',
    ),
    rules: fc.tuple(...Array.from({ length: count }, (_, i) => ruleBlock(i + 1))),
    end: fc.constantFrom("", "\n", "\n\n", "\n# [[rule]] set aside by hand\n"),
    eol: fc.constantFrom("lf", "crlf", "mixed"),
  }).map(({ preamble, rules, end, eol }) => {
    const text = preamble + rules.join("\n") + end;
    if (eol === "lf") return text;
    if (eol === "crlf") return text.replaceAll("\n", "\r\n");
    // Every other line with CRLF, as an editor on another system leaves a file.
    let n = 0;
    return text.replace(/\n/g, () => (n++ % 2 === 0 ? "\r\n" : "\n"));
  })
);

Deno.test("edit: removing any rule leaves every other byte and the same other rules (property)", () => {
  fc.assert(
    fc.property(file, (text) => {
      const before = rulesOf(text);
      for (let i = 1; i <= before.length; i++) {
        const removal = removeRule(text, i);
        assert(removal !== null);
        // The rest, byte for byte: the original without whole lines first..last (line ends kept).
        const raw = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
        assertEquals(
          removal.text,
          [...raw.slice(0, removal.firstLine - 1), ...raw.slice(removal.lastLine)].join(""),
        );
        // Only the rule's own lines, comments and blank lines went.
        const removedRules = removal.removed.split(/\r?\n/).filter((l) => /^\s*\[\[/.test(l));
        assertEquals(removedRules.length, 1, removal.removed);
        assertEquals(rulesOf(removal.text), before.filter((_, j) => j !== i - 1));
        // Comments after the last table are no part of it.
        if (text.includes("set aside by hand")) assert(removal.text.includes("set aside by hand"));
      }
      assertEquals(removeRule(text, before.length + 1), null);
    }),
    { numRuns: 300, seed: 6122026 },
  );
});

Deno.test("edit: a rule's comment block goes with it; the next rule's stays; one blank line between", () => {
  const text = `# the move

# www moves to 203.0.113.10
[[rule]]
name = "www"
listen = "127.0.0.1:8080"
bounce_to = "127.0.0.1:80"

# ssh stays a while
[[rule]]
name = "ssh"
listen = "127.0.0.1:2222"
bounce_to = "127.0.0.1:22"
`;
  const first = removeRule(text, 1)!;
  assertEquals(
    first.text,
    `# the move

# ssh stays a while
[[rule]]
name = "ssh"
listen = "127.0.0.1:2222"
bounce_to = "127.0.0.1:22"
`,
  );
  assertEquals([first.firstLine, first.lastLine], [3, 8]);
  const last = removeRule(text, 2)!;
  assertEquals(
    last.text,
    `# the move

# www moves to 203.0.113.10
[[rule]]
name = "www"
listen = "127.0.0.1:8080"
bounce_to = "127.0.0.1:80"
`,
  );
});
