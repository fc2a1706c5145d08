/**
 * The README and the CLI's own help say the same: every flag of each
 * command's `--help` is in the README's synopsis of that command, every flag
 * the synopsis gives exists, and the top-level help names only real flags.
 */
import { fileURLToPath } from "node:url";
import { assertEquals } from "../assert.ts";
import { runCli } from "./helpers.ts";

const README = fileURLToPath(new URL("../../README.md", import.meta.url));
const COMMANDS = [
  "run",
  "check",
  "forward",
  "import-barefoot",
  "status",
  "sessions",
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

async function readmeSynopsis(): Promise<Map<string, string>> {
  const text = await Deno.readTextFile(README);
  const section = text.slice(text.indexOf("\n## Command line\n"));
  const block = /```\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error("README: no synopsis block under ## Command line");
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

Deno.test("README's synopsis and each command's --help name the same flags", async () => {
  const readme = await readmeSynopsis();
  assertEquals([...readme.keys()].sort(), [...COMMANDS].sort(), "commands in the README synopsis");
  const mismatches: string[] = [];
  for (const command of COMMANDS) {
    const fromHelp = helpFlags(await help([command, "--help"]));
    const fromReadme = flagsIn(readme.get(command)!);
    for (const flag of fromHelp) {
      if (!fromReadme.has(flag)) mismatches.push(`${command} --help has ${flag}; README does not`);
    }
    for (const flag of fromReadme) {
      if (!fromHelp.has(flag)) mismatches.push(`README gives ${command} ${flag}; --help does not`);
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
