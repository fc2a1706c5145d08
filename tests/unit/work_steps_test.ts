/**
 * Work in steps: a rule file parsed a part at a time reads exactly as the
 * whole parsed at once (or fails with the same error), and sliced work lets
 * the event loop in between its steps.
 */
import fc from "fast-check";
import { parse } from "smol-toml";
import { assert, assertEquals } from "../assert.ts";
import { parseTomlSteps } from "../../src/config/toml_steps.ts";
import { runSteps, runStepsSliced, type Steps } from "../../src/config/work_steps.ts";
import { parseConfig } from "../../src/config/load.ts";
import { loadServices } from "../../src/config/services.ts";

/** The whole text parsed at once: its document, or its error message. */
function whole(text: string): unknown {
  try {
    return parse(text);
  } catch (error) {
    return { error: (error as Error).message };
  }
}

/** The text parsed in parts of about `partChars`: its document or error, and how many steps. */
function inParts(text: string, partChars: number): { result: unknown; steps: number } {
  const steps = parseTomlSteps(text, partChars);
  let count = 0;
  try {
    for (;;) {
      const step = steps.next();
      if (step.done) return { result: step.value, steps: count };
      count++;
    }
  } catch (error) {
    return { result: { error: (error as Error).message }, steps: count };
  }
}

const RULE = (i: number) =>
  `[[rule]]\nname = "r${i}"\nfrom = ["10.0.${i % 256}.0/24"]\n` +
  `listen = "127.0.0.1:${10_000 + i}"\nbounce_to = "127.0.0.1:80"\n`;

Deno.test("TOML in parts: a large file is cut before rule headers and reads as the whole", () => {
  const text = `[server]\nlog_level = "info"\n# before the rules\n\n` +
    Array.from({ length: 300 }, (_, i) =>
      RULE(i) +
      (i % 7 === 0 ? `[rule.health_check]\ninterval = "5s"\n` : "") +
      (i % 11 === 0 ? `until = 2030-01-0${1 + i % 9}T00:00:00Z\n` : "") +
      (i % 13 === 0 ? `[[rule]] # a comment after the header\nname = "c${i}"\n` : "")).join("\n") +
    `[defaults]\nlog = ["error"]\n`;
  const { result, steps } = inParts(text, 1_000);
  assert(steps > 20, `parsed in ${steps} parts`);
  assertEquals(result, whole(text));
});

Deno.test("TOML in parts: whatever a cut could change is parsed whole, with the whole's error", () => {
  const rules = Array.from({ length: 40 }, (_, i) => RULE(i)).join("\n");
  const cases = [
    // A table defined twice, once in each part: the whole's error.
    `[server]\nlog_level = "info"\n${rules}\n[server]\nlog_level = "warn"\n`,
    // A subtable of a table from another part: valid, as the whole says.
    `[server]\nlog_level = "info"\n${rules}\n[server.extra]\nx = 1\n`,
    // A multi-line string holding a header line.
    `[server]\nnote = """\n${rules}"""\n${rules}`,
    `[server]\nnote = '''\n${rules}'''\n${rules}`,
    // Rules written as a value cannot be appended to, even with a header line in a string.
    `rule = [{ name = "v" }]\n${rules}`,
    `rule = [{ name = "v" }]\n[server]\nstate = '''\n[[rule]]\n'''\n${rules}`,
    // An array left open across a cut.
    `${rules}[[rule]]\nfrom = [\n${rules}]\n`,
    // A header with more after it is not a cut.
    `${rules.replaceAll("[[rule]]\n", "[[rule]]x\n")}`,
    // CRLF line ends.
    rules.replaceAll("\n", "\r\n"),
    // No rule header after the first part.
    `${RULE(1)}[server]\n${"# padding\n".repeat(200)}`,
  ];
  for (const text of cases) {
    for (const partChars of [1, 50, 300, 2_000]) {
      assertEquals(
        inParts(text, partChars).result,
        whole(text),
        `${partChars}: ${text.slice(0, 80)}`,
      );
    }
  }
});

Deno.test("TOML in parts: generated files read as the whole, or fail alike", () => {
  const line = fc.constantFrom(
    "[[rule]]",
    "[[rule]] # c",
    "[[rule]]x",
    "[[ rule ]]",
    "[server]",
    "[defaults]",
    "[rule.health_check]",
    "[server.sub]",
    'name = "a"',
    "name = 'b'",
    "port = 1",
    "list = [",
    "]",
    "1,",
    '"""',
    "'''",
    "rule = []",
    "d = 2030-01-01T00:00:00Z",
    "# comment",
    "",
    "\r",
  );
  fc.assert(
    fc.property(fc.array(line, { maxLength: 60 }), fc.integer({ min: 1, max: 120 }), (lines, n) => {
      const text = lines.join("\n");
      assertEquals(inParts(text, n).result, whole(text));
    }),
    { seed: 24, numRuns: 2_000 },
  );
});

Deno.test("a rule file parsed in steps reads as parsed at once", () => {
  const text = Array.from({ length: 500 }, (_, i) => RULE(i)).join("\n");
  const services = loadServices();
  const at = parseConfig(text, "rules.toml", services);
  assert(at.ok);
  assertEquals(at.config.rules.length, 500);
  assertEquals(at.config.rules[499].lines.header, 499 * 6 + 1);
});

Deno.test("sliced work: timers run between slices, and the result is the steps' own", async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const seen: number[] = [];
  function* counting(): Steps<number> {
    for (let i = 0; i < 5; i++) {
      seen.push(ticks);
      const until = performance.now() + 2;
      while (performance.now() < until) { /* a step that takes 2 ms */ }
      yield;
    }
    return 42;
  }
  assertEquals(await runStepsSliced(counting(), 1), 42);
  clearInterval(timer);
  // Each step after the first saw the timer run at least once more.
  for (let i = 1; i < seen.length; i++) assert(seen[i] > seen[i - 1], `ticks ${seen}`);
  assertEquals(runSteps(counting()), 42);
});
