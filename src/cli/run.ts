/**
 * `portbounce run`: load the rule file, bind every listener, relay until
 * SIGTERM/SIGINT, then drain.
 *
 * @module
 */
import { countOf } from "../config/describe.ts";
import { formatProblem } from "../config/load.ts";
import { LOG_FORMATS, LOG_LEVELS } from "../config/types.ts";
import { choice, durationOption, parseCommandArgs, workersOption } from "./args.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { runDaemon } from "../daemon/daemon.ts";
import { loadRuleFile } from "../server/rule_file.ts";

/** Help for `portbounce run`. */
export const RUN_HELP = `Usage: portbounce run [-c FILE] [options]

Runs the rules of FILE (default /etc/portbounce.toml) until SIGTERM or SIGINT.

Options:
  -c, --config FILE       rule file (default /etc/portbounce.toml)
      --log-format FMT    text or json (overrides [server] log_format)
      --log-level LEVEL   debug, info, warning or error (overrides [server] log_level)
      --ready-file PATH   once every listener is bound, write PATH (JSON: the bound
                          addresses); rewritten after a reload, removed on exit
      --pid-file PATH     write the process id to PATH (overrides [server] pid_file);
                          removed on exit. Beside it, PATH.PID.sock answers --takeover
      --takeover          replace the instance named by the pid file without
                          refusing a client: bind beside it, then have it stop
                          accepting and drain (starts as usual if none runs)
      --state PATH        keep the client ledger and history in PATH (a file, or a
                          directory) across restarts (overrides [server] state)
      --exit-after DUR    stop (as on SIGTERM) after DUR, e.g. "30s"
      --workers N         isolates accepting TCP connections: a number, or "auto"
                          for one per core (overrides [server] workers; Linux)
  -h, --help              this help

Signals: SIGTERM/SIGINT drain and stop (a second one stops at once),
SIGHUP reloads the rules (and reopens log files), SIGUSR2 writes the
counters and every live session to the log. Never SIGUSR1 (docs/operations.md, "Not SIGUSR1").
Exit codes: 0 stopped, 1 runtime failure, 2 bad rule file or usage,
3 a listener could not be bound.`;

/** Runs `portbounce run ARGS`; resolves to the exit code. */
export async function runCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("run", args, {
    config: { type: "string", short: "c", default: "/etc/portbounce.toml" },
    "log-format": { type: "string" },
    "log-level": { type: "string" },
    "ready-file": { type: "string" },
    "exit-after": { type: "string" },
    "pid-file": { type: "string" },
    state: { type: "string" },
    workers: { type: "string" },
    takeover: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(RUN_HELP);
    return ExitCode.ok;
  }
  const logFormat = choice("--log-format", values["log-format"], LOG_FORMATS);
  const logLevel = choice("--log-level", values["log-level"], LOG_LEVELS);
  const workers = workersOption(values.workers);
  const pidFile = values["pid-file"];

  const loaded = await loadRuleFile(values.config!);
  if (!loaded.ok) {
    for (const problem of loaded.problems) {
      console.error(formatProblem(problem));
    }
    console.error(
      `portbounce: ${
        countOf(loaded.problems.length, "problem")
      } in the rule file; nothing was started`,
    );
    return ExitCode.usage;
  }
  for (const warning of loaded.warnings) {
    console.error(`warning: ${formatProblem(warning)}`);
  }
  const pidFilePath = pidFile ?? loaded.config.server.pidFile ?? undefined;
  if (values.takeover && pidFilePath === undefined) {
    console.error(
      "portbounce: --takeover finds the running instance by its pid file: give --pid-file PATH or [server] pid_file",
    );
    return ExitCode.usage;
  }
  return await runDaemon(loaded, {
    overrides: { format: logFormat, level: logLevel },
    readyFile: values["ready-file"],
    exitAfterMs: durationOption("--exit-after", values["exit-after"]),
    pidFile: pidFilePath,
    statePath: values.state,
    takeover: values.takeover,
    ruleFile: values.config!,
    workers,
  });
}
