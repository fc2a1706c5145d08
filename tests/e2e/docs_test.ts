/**
 * The documentation and the program say the same: every flag of each
 * command's `--help` is in the reference's synopsis of that command, every
 * flag the synopsis gives exists, the top-level help names only real flags,
 * every key of the rule file is in the reference, and every link between the
 * README and docs/ leads to a file and heading that exist.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertEquals } from "../assert.ts";
import { RULE_KEYS, SERVER_KEYS } from "../../src/config/load.ts";
import { runCli } from "./helpers.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const REFERENCE = join(ROOT, "docs/reference.md");
/** The README and every document of docs/ it leads to. */
const DOCUMENTS = [
  "README.md",
  "docs/reference.md",
  "docs/operations.md",
  "docs/guides.md",
  "docs/development.md",
  "docs/SECURITY.md",
  "docs/BAREFOOT.md",
  "docs/PLATFORM.md",
];
const COMMANDS = [
  "run",
  "check",
  "forward",
  "import-barefoot",
  "status",
  "sessions",
  "clients",
  "retire",
  "export",
  "version",
];
/** Flags every command has, which the synopsis leaves to `portbounce COMMAND --help`. */
const EVERYWHERE = new Set(["-h", "--help"]);
/** Long forms the synopsis writes short: `-c FILE` is `--config FILE`. */
const ALIASES: Record<string, string> = { "--config": "-c" };

/** The flags named in `text`: `--word-word` and `-c`, not `round-robin` or `8000-8009`. */
function flagsIn(text: string): Set<string> {
  const flags = new Set<string>();
  for (const [flag] of text.matchAll(/(?<![\w-])--?[a-z][a-z-]*(?![\w-])/g)) {
    flags.add(ALIASES[flag] ?? flag);
  }
  for (const flag of EVERYWHERE) flags.delete(flag);
  return flags;
}

/** Each command's lines of a synopsis block (`portbounce CMD ...` and its indented continuation). */
function synopsis(block: string): Map<string, string> {
  const byCommand = new Map<string, string>();
  let current: string | null = null;
  for (const line of block.split("\n")) {
    const start = /^\s*portbounce (\S+)/.exec(line);
    if (start) {
      current = COMMANDS.includes(start[1]) ? start[1] : null;
      if (current) byCommand.set(current, (byCommand.get(current) ?? "") + line + "\n");
    } else if (current && /^\s+\S/.test(line)) {
      byCommand.set(current, byCommand.get(current)! + line + "\n");
    } else current = null;
  }
  return byCommand;
}

async function referenceSynopsis(): Promise<Map<string, string>> {
  const text = await Deno.readTextFile(REFERENCE);
  const section = text.slice(text.indexOf("\n## Command line\n"));
  const block = /```\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error("docs/reference.md: no synopsis block under ## Command line");
  return synopsis(block[1]);
}

/**
 * The flags a command's help defines: those of its usage line and the one or
 * two each option line starts with (descriptions may name other tools' flags,
 * such as `nft -f`).
 */
function helpFlags(text: string): Set<string> {
  const lines = text.split("\n");
  const defining = lines.filter((line) => line.startsWith("Usage:")).join("\n") + "\n" +
    lines.flatMap((line) => /^\s+((?:-[a-z], )?--?[a-z][a-z-]*)/.exec(line)?.[1] ?? []).join(" ");
  return flagsIn(defining);
}

async function help(args: string[]): Promise<string> {
  const { code, stdout, stderr } = await runCli(args);
  assertEquals(code, 0, `portbounce ${args.join(" ")}: exit ${code}\n${stderr}`);
  return stdout;
}

Deno.test("the reference's synopsis and each command's --help name the same flags", async () => {
  const readme = await referenceSynopsis();
  assertEquals([...readme.keys()].sort(), [...COMMANDS].sort(), "commands in the synopsis");
  const mismatches: string[] = [];
  for (const command of COMMANDS) {
    const fromHelp = helpFlags(await help([command, "--help"]));
    const fromReadme = flagsIn(readme.get(command)!);
    for (const flag of fromHelp) {
      if (!fromReadme.has(flag)) {
        mismatches.push(`${command} --help has ${flag}; the reference does not`);
      }
    }
    for (const flag of fromReadme) {
      if (!fromHelp.has(flag)) {
        mismatches.push(`the reference gives ${command} ${flag}; --help does not`);
      }
    }
  }
  assertEquals(mismatches, []);
});

Deno.test("the top-level help names only flags its commands have", async () => {
  const top = synopsis(await help(["--help"]));
  const mismatches: string[] = [];
  for (const [command, lines] of top) {
    const known = helpFlags(await help([command, "--help"]));
    for (const flag of flagsIn(lines)) {
      if (!known.has(flag)) mismatches.push(`portbounce --help: ${command} ${flag}`);
    }
  }
  assertEquals(mismatches, []);
  assertEquals([...top.keys()].sort(), [...COMMANDS].sort(), "commands in portbounce --help");
});

Deno.test("every key of [server] and [[rule]] has its row in the reference", async () => {
  const text = await Deno.readTextFile(REFERENCE);
  const rows = new Set([...text.matchAll(/^\| `([a-z_]+)`/gm)].map((match) => match[1]));
  const missing = [...new Set([...SERVER_KEYS, ...RULE_KEYS])].filter((key) => !rows.has(key));
  assertEquals(missing, []);
});

/** The anchor GitHub gives a heading: lower case, punctuation gone, spaces as dashes. */
function anchorOf(heading: string): string {
  return heading.toLowerCase().replace(/[^\p{L}\p{N}_\- ]/gu, "").replaceAll(" ", "-");
}

/** The headings of a Markdown text, outside code blocks. */
function headings(text: string): Set<string> {
  const found = new Set<string>();
  let code = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("```")) code = !code;
    const heading = code ? null : /^#{1,6} (.+)$/.exec(line);
    if (heading) found.add(anchorOf(heading[1]));
  }
  return found;
}

Deno.test("every link between the README and docs/ leads to a file and heading that exist", async () => {
  const broken: string[] = [];
  for (const document of DOCUMENTS) {
    const text = await Deno.readTextFile(join(ROOT, document));
    const prose = text.replace(/```[\s\S]*?```/g, "");
    for (const [, href] of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(href)) continue; // https:, mailto:
      const [path, anchor] = href.split("#");
      const file = path === "" ? join(ROOT, document) : join(ROOT, dirname(document), path);
      const target = await Deno.readTextFile(file).catch(() => null);
      if (target === null) {
        if (!(await Deno.stat(file).catch(() => null))) broken.push(`${document}: ${href}`);
        continue;
      }
      if (anchor && !headings(target).has(anchor)) broken.push(`${document}: ${href} (no heading)`);
    }
  }
  assertEquals(broken, []);
});
