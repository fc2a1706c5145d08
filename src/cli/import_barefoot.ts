/**
 * `portbounce import-barefoot FILE`: translate a barefootd.conf into a
 * commented rule file on stdout; warnings for what has no equivalent go to
 * stderr. The output is validated like any rule file before it is printed.
 *
 * @module
 */
import { BarefootSyntaxError, parseBarefoot } from "../barefoot/parse.ts";
import { translateBarefoot } from "../barefoot/translate.ts";
import { formatProblem, parseConfig } from "../config/load.ts";
import { loadServices } from "../config/services.ts";
import { parseCommandArgs, UsageError } from "./args.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { MAX_RULE_FILE_BYTES } from "../server/rule_file.ts";

/** A rule translated into more listeners than this is pointed out. */
const MANY_LISTENERS = 1_000;

/** Help for `portbounce import-barefoot`. */
export const IMPORT_HELP = `Usage: portbounce import-barefoot FILE > portbounce.toml

Translates a barefootd.conf (Barefoot 1.4 syntax) into a portbounce rule file,
written to stdout with comments. Rule order is kept. Anything without an
equivalent becomes a "# not translated: ..." comment and a warning on stderr;
a rule whose clients or addresses cannot be expressed stays a comment whole.

Exit codes: 0 translated (check the warnings), 2 FILE cannot be read or
translated, or the translation would be larger than a rule file may be
(4 MiB): then nothing is written.`;

/** Runs `portbounce import-barefoot ARGS`; resolves to the exit code. */
export async function importBarefootCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs("import-barefoot", args, {
    help: { type: "boolean", short: "h" },
  }, true);
  if (values.help) {
    console.log(IMPORT_HELP);
    return ExitCode.ok;
  }
  if (positionals.length !== 1) {
    throw new UsageError("import-barefoot: give exactly one barefootd.conf");
  }
  const path = positionals[0];
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    console.error(`${path}: cannot read: ${(error as Error).message}`);
    return ExitCode.usage;
  }
  const services = loadServices();
  let translation;
  try {
    translation = translateBarefoot(parseBarefoot(text), path, services);
  } catch (error) {
    if (!(error instanceof BarefootSyntaxError)) throw error;
    console.error(`${path}:${error.line}: ${error.message}`);
    return ExitCode.usage;
  }
  const validated = parseConfig(translation.toml, `${path} (translated)`, services);
  if (!validated.ok) {
    for (const problem of validated.problems) console.error(formatProblem(problem));
    console.error(`${path}: the translation is not a valid rule file (see above)`);
    return ExitCode.usage;
  }
  const output = translation.toml.trimEnd();
  const size = new TextEncoder().encode(output).length + 1;
  if (size > MAX_RULE_FILE_BYTES) {
    // Written anyway, it would be a file that check and run refuse.
    console.error(
      `${path}: the translation is ${size} bytes, over the ${MAX_RULE_FILE_BYTES} bytes a rule file ` +
        `may have (${validated.config.rules.length} rules): nothing was written; split ` +
        `barefootd.conf and import each part into a rule file of its own`,
    );
    return ExitCode.usage;
  }
  for (const warning of translation.warnings) {
    console.error(`${path}:${warning.line}: warning: ${warning.message}`);
  }
  for (const rule of validated.config.rules) {
    const ports = rule.listen.reduce((sum, l) => sum + l.ports.last - l.ports.first + 1, 0);
    if (ports * rule.protocols.length <= MANY_LISTENERS) continue;
    console.error(
      `${path}: warning: rule ${rule.name} listens on ${ports} ports (${
        rule.protocols.join(" and ")
      }): ` +
        `${ports * rule.protocols.length} listeners, each an open file; ` +
        `'portbounce check' says what the file needs against the usual limits`,
    );
  }
  console.log(output);
  return ExitCode.ok;
}
