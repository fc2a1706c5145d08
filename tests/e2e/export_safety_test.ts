/**
 * `portbounce export` cannot be injected: whatever text reaches the output
 * (the rule file's path, the command line, rule and host names, problems of
 * rules left out) stays inside a comment or a quoted string, and interface
 * names that are not names are refused. Checked by nft itself (the output is
 * loaded into a namespace beside a table of the router's own, and what it
 * created is counted) and, for pf.conf, by a lexer written as pfctl reads
 * the file (pfctl does not run here).
 */
import fc from "fast-check";
import { assert, assertEquals, assertIncludes, assertThrows } from "../assert.ts";
import { runCli, tempDir } from "./helpers.ts";
import { cmd, ip, nft, root } from "../fixtures/export/router.ts";
import { buildExport, type ExportModel } from "../../src/export/model.ts";
import { nftModel, renderNftables } from "../../src/export/nftables.ts";
import { pfModel, renderPf } from "../../src/export/pf.ts";
import type { ExportOptions } from "../../src/export/text.ts";
import { parseConfig } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";

/** Pieces a hostile string is made of: line ends, continuations, quotes, statements. */
const FRAGMENTS = [
  "\n",
  "\r\n",
  "\r",
  "\\",
  "\\\n",
  '"',
  "'",
  "#",
  ";",
  "{",
  "}",
  "flush ruleset",
  "delete table inet router_own_firewall",
  "table inet evil { }",
  "pass all",
  "block all",
  "$ext_if",
  "\u2028",
  "\u0085",
  "\x00",
  "\t",
  "\x1b[2J",
  "é",
  " ",
];
const hostile = fc.array(fc.constantFrom(...FRAGMENTS), { minLength: 1, maxLength: 6 })
  .map((parts) => parts.join(""));

const RULES = `
[[rule]]
name = "web"
listen = ["www.example:80", "203.0.113.11:80"]
from = ["198.51.100.0/24"]
bounce_to = "files.example:8080"
log = ["connect", "block"]
max_sessions = 10
max_sessions_per_client = 2
throttle = "20/1s"
source = "203.0.113.129"

[[rule]]
name = "lab"
action = "block"
listen = "203.0.113.12:22"
from = "198.51.100.3/32"
log = ["block"]

[[rule]]
name = "dns"
protocol = ["tcp", "udp"]
listen = "[2001:db8::53]:53"
bounce_to = "203.0.113.53"
`;

function baseModel(): ExportModel {
  const loaded = parseConfig(RULES, "rules.toml", builtInServices());
  assert(loaded.ok, JSON.stringify(!loaded.ok && loaded.problems));
  return buildExport(loaded.config, {
    hosts: new Map([["www.example", ["203.0.113.10"]], ["files.example", ["203.0.113.200"]]]),
    interfaces: new Map(),
    isLocal: () => false,
  });
}

/** The model with `text` in every place a name or a problem reaches the output. */
function withText(model: ExportModel, text: string): ExportModel {
  return {
    source: text,
    rules: model.rules.map((r) => ({
      ...r,
      rule: { ...r.rule, name: `${text}${r.rule.index}` },
      matches: r.matches.map((m) =>
        m.destinationName === null ? m : { ...m, destinationName: text }
      ),
      targets: r.targets.map((t) => t.name === null ? t : { ...t, name: text }),
      notDone: r.notDone.map((line) => `${line} ${text}`),
      problems: r.problems.map(() => ({ where: text, message: text })),
    })),
  };
}

function options(text: string): ExportOptions {
  return {
    source: text,
    version: "0.0.0",
    command: text,
    table: "portbounce",
    masquerade: true,
    interface: null,
  };
}

/**
 * pf.conf as pfctl's lexer reads it: a backslash before a line break joins
 * the lines (in comments too), `#` starts a comment to the end of the line,
 * quotes make one token, a line break ends a statement. Returns each
 * statement's first word.
 */
function pfStatements(text: string): string[] {
  const joined = text.replaceAll("\\\n", "");
  const statements: string[] = [];
  let words: string[] = [];
  let word = "";
  const endWord = () => {
    if (word !== "") words.push(word);
    word = "";
  };
  for (let i = 0; i < joined.length; i++) {
    const c = joined[i];
    if (c === "#") {
      while (i < joined.length && joined[i] !== "\n") i++;
      i--;
    } else if (c === '"' || c === "'") {
      const end = joined.indexOf(c, i + 1);
      word += joined.slice(i, end === -1 ? joined.length : end + 1);
      i = end === -1 ? joined.length : end;
    } else if (c === "\n") {
      endWord();
      if (words.length > 0) statements.push(words[0]);
      words = [];
    } else if (c === " " || c === "\t") {
      endWord();
    } else {
      word += c;
    }
  }
  endWord();
  if (words.length > 0) statements.push(words[0]);
  return statements;
}

/** What a loaded ruleset holds: tables by name, and the number of chains, sets and rules of each. */
async function ruleset(ns: string): Promise<Record<string, string>> {
  const out = await cmd("ip", ["netns", "exec", ns, "nft", "-j", "list", "ruleset"]);
  assert(out.ok, out.stderr);
  const counts: Record<string, Record<string, number>> = {};
  for (const item of JSON.parse(out.stdout).nftables) {
    const [kind, body] = Object.entries(item)[0] as [string, { table?: string; name?: string }];
    if (kind === "metainfo") continue;
    const table = kind === "table" ? body.name! : body.table!;
    counts[table] ??= {};
    counts[table][kind] = (counts[table][kind] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(counts).map(([t, c]) => [t, JSON.stringify(c)]));
}

const SENTINEL = `table inet router_own_firewall {
\tchain forward {
\t\ttype filter hook forward priority 0; policy drop;
\t}
}
`;

/** A namespace holding the router's own table; `load` loads an export beside it. */
async function routerNamespace(dir: string) {
  const ns = `pbx-esc${Deno.pid}`;
  await ip(["netns", "add", ns]);
  await Deno.writeTextFile(`${dir}/own.nft`, SENTINEL);
  const own = await cmd("ip", ["netns", "exec", ns, "nft", "-f", `${dir}/own.nft`]);
  assert(own.ok, own.stderr);
  return {
    async load(text: string) {
      await Deno.writeTextFile(`${dir}/export.nft`, text);
      return await cmd("ip", ["netns", "exec", ns, "nft", "-f", `${dir}/export.nft`]);
    },
    ruleset: () => ruleset(ns),
    async [Symbol.asyncDispose]() {
      await ip(["netns", "del", ns]).catch(() => {});
    },
  };
}

Deno.test("export: a hostile string in any text reaching pf.conf adds no statement (property)", () => {
  const model = baseModel();
  const expected = pfStatements(renderPf(pfModel(withText(model, "benign")), options("benign")));
  assert(expected.length > 10);
  fc.assert(
    fc.property(hostile, (text) => {
      const out = renderPf(pfModel(withText(model, text)), options(text));
      assertEquals(pfStatements(out), expected);
      // One line per statement or comment: nothing hostile leaves its line.
      // deno-lint-ignore no-control-regex -- a NUL is one of the things that must not get out
      assert(!/[\r\u2028\u0085\x00]/.test(out));
    }),
    { numRuns: 300, seed: 20261206 },
  );
});

Deno.test("export: an interface name that is not one is refused, not written", () => {
  const model = baseModel();
  for (const name of ["eth0\nflush ruleset", 'eth0"', "eth0 ", "(egress)", "a".repeat(16)]) {
    const opts = { ...options("x"), interface: name };
    assertThrows(() => renderNftables(model, opts), "is not an interface name");
    assertThrows(() => renderPf(model, opts), "is not an interface name");
    const sourced = {
      ...model,
      rules: model.rules.map((r) =>
        r.rule.action === "pass"
          ? { ...r, rule: { ...r.rule, source: { kind: "interface" as const, name, text: name } } }
          : r
      ),
    };
    assertThrows(() => renderNftables(sourced, options("x")), "is not an interface name");
    assertThrows(() => renderPf(sourced, options("x")), "is not an interface name");
  }
});

Deno.test({
  name:
    "export: a hostile string in any text reaching nft adds nothing to the ruleset and removes nothing (property, loaded by nft)",
  ignore: !root || !nft,
  async fn() {
    await using dir = await tempDir();
    await using router = await routerNamespace(`${dir}`);
    const model = baseModel();
    const benign = await router.load(
      renderNftables(nftModel(withText(model, "benign")), options("benign")),
    );
    assert(benign.ok, benign.stderr);
    const expected = await router.ruleset();
    assertEquals(Object.keys(expected).sort(), ["portbounce", "router_own_firewall"]);
    await fc.assert(
      fc.asyncProperty(hostile, async (text) => {
        const out = renderNftables(nftModel(withText(model, text)), options(text));
        const loaded = await router.load(out);
        assert(loaded.ok, `${loaded.stderr}\n${out}`);
        assertEquals(await router.ruleset(), expected);
      }),
      { numRuns: 60, seed: 20261206 },
    );
  },
});

Deno.test({
  name:
    "export: a rule file path that says `flush ruleset` stays a comment; hostile names in the file or the command are refused",
  ignore: !root || !nft,
  async fn() {
    await using dir = await tempDir();
    await using router = await routerNamespace(`${dir}`);
    const rules =
      `[[rule]]\nname = "web"\nlisten = "203.0.113.10:80"\nbounce_to = "203.0.113.200:8080"\n`;
    // The path of the report: before, nft -f exited 0 and the router's own table was gone.
    for (
      const name of [
        "x\nflush ruleset\n#",
        "x\\\nflush ruleset",
        "x\r\ndelete table inet router_own_firewall\n",
        'x" ; flush ruleset ; "',
        "x\u2028flush ruleset",
      ]
    ) {
      const path = `${dir}/${name}.toml`;
      await Deno.writeTextFile(path, rules);
      for (const format of ["nftables", "pf"]) {
        const out = await runCli(["export", "--format", format, "-c", path]);
        assertEquals(out.code, 0, out.stderr);
        assert(out.stdout.includes("# Generated from "), out.stdout);
        if (format === "pf") {
          assertEquals(pfStatements(out.stdout), ["pass", "block", "block"]);
          continue;
        }
        const loaded = await router.load(out.stdout);
        assert(loaded.ok, loaded.stderr);
        const tables = await router.ruleset();
        assertEquals(Object.keys(tables).sort(), ["portbounce", "router_own_firewall"]);
      }
    }
    // What the file names, and what the command names, is refused before anything is written.
    const refused: [string, string[], string][] = [
      [
        `[[rule]]\nname = "web\\nflush ruleset"\nlisten = "203.0.113.10:80"\nbounce_to = "203.0.113.200:8080"\n`,
        [],
        "is not a usable name",
      ],
      [
        `[[rule]]\nname = "web"\nlisten = "203.0.113.10:80"\nbounce_to = "a\\nflush ruleset:8080"\n`,
        [],
        "bounce_to",
      ],
      [
        `[server]\nsource = "r1\\nflush ruleset"\n${rules}`,
        [],
        "neither an IP address nor an interface name",
      ],
      [
        `[[rule]]\nname = "web"\nlisten = "lo\\nflush:80"\nbounce_to = "203.0.113.200:8080"\n`,
        [],
        "listen",
      ],
      [rules, ["--interface", "eth0\nflush ruleset"], "is not an interface name"],
      [rules, ["--table", "portbounce\nflush ruleset"], "is not a table name"],
    ];
    for (const [text, extra, why] of refused) {
      await Deno.writeTextFile(`${dir}/rules.toml`, text);
      for (const format of ["nftables", "pf"]) {
        const out = await runCli([
          "export",
          "--format",
          format,
          "-c",
          `${dir}/rules.toml`,
          ...extra,
        ]);
        assertEquals(out.code, 2, `${text} ${extra}: ${out.stderr}`);
        assertEquals(out.stdout, "");
        assertIncludes(out.stderr, why);
      }
    }
  },
});
