/**
 * portbounce: a TCP and UDP port bouncer driven by a TOML rule file.
 * This file only dispatches to the subcommands in `src/cli/`.
 *
 * @module
 */
import { UsageError } from "./src/cli/args.ts";
import { ExitCode } from "./src/daemon/exit_codes.ts";
import { VERSION } from "./src/version.ts";

const HELP = `portbounce ${VERSION}: a TCP and UDP port bouncer

Usage:
  portbounce run [-c FILE]                run the rules (default FILE: /etc/portbounce.toml)
  portbounce check [-c FILE] [--json] [--probe]
                                          validate, print the listener -> target table,
                                          and with --probe connect to every TCP target
  portbounce forward [--udp|--both] [--from CIDR]... SPEC...
                                          ad hoc, no file: SPEC is [ADDR:]PORT=HOST:PORT
  portbounce import-barefoot FILE         translate a barefootd.conf into a rule file
  portbounce status [--url URL|-c FILE]   ask a running instance for its counters
  portbounce sessions [--url URL|-c FILE] list a running instance's live sessions
  portbounce clients [RULE] [--since D]   who used each rule, first and last seen
  portbounce retire RULE [-c FILE]        remove a rule nobody uses any more, and reload
  portbounce export --format nftables|pf [-c FILE] [--masquerade]
                                          the rules as router configuration
  portbounce version                      print the version
  portbounce COMMAND --help               help for one command`;

const VERSION_HELP = `Usage: portbounce version

Prints the version of portbounce and of the Deno it runs on.`;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  // Loaded on demand: start-up only pays for the command it runs.
  run: async (args) => (await import("./src/cli/run.ts")).runCommand(args),
  check: async (args) => (await import("./src/cli/check.ts")).checkCommand(args),
  forward: async (args) => (await import("./src/cli/forward.ts")).forwardCommand(args),
  "import-barefoot": async (args) =>
    (await import("./src/cli/import_barefoot.ts")).importBarefootCommand(args),
  status: async (args) => (await import("./src/cli/status.ts")).statusCommand(args),
  sessions: async (args) => (await import("./src/cli/sessions.ts")).sessionsCommand(args),
  clients: async (args) => (await import("./src/cli/clients.ts")).clientsCommand(args),
  retire: async (args) => (await import("./src/cli/retire.ts")).retireCommand(args),
  export: async (args) => (await import("./src/cli/export.ts")).exportCommand(args),
  version: (args) => {
    if (args.includes("-h") || args.includes("--help")) {
      console.log(VERSION_HELP);
      return Promise.resolve(ExitCode.ok);
    }
    if (args.length > 0) throw new UsageError(`version: takes no arguments, got "${args[0]}"`);
    console.log(`portbounce ${VERSION} (deno ${Deno.version.deno})`);
    return Promise.resolve(ExitCode.ok);
  },
};

async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (
    name === undefined || name === "-h" || name === "--help" || name === "help"
  ) {
    console.log(HELP);
    return name === undefined ? ExitCode.usage : ExitCode.ok;
  }
  if (name === "--version" || name === "-V") return COMMANDS.version([]);
  const command = COMMANDS[name];
  if (!command) {
    console.error(`portbounce: unknown command "${name}"\n\n${HELP}`);
    return ExitCode.usage;
  }
  try {
    return await command(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      const message = error.message.startsWith(`${name}: `)
        ? error.message
        : `${name}: ${error.message}`;
      console.error(`portbounce ${message}\nSee "portbounce ${name} --help".`);
      return ExitCode.usage;
    }
    console.error(
      `portbounce: ${error instanceof Error ? error.stack : error}`,
    );
    return ExitCode.runtime;
  }
}

if ("WorkerGlobalScope" in globalThis) {
  // Started as one of the isolates that accept TCP connections (`[server] workers`).
  await import("./src/workers/worker.ts");
} else if (import.meta.main) Deno.exit(await main(Deno.args));
