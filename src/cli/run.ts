/**
 * `portbounce run`: load the rule file, bind every listener, relay until
 * SIGTERM/SIGINT, then drain.
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import { formatProblem } from "../config/load.ts";
import { LOG_FORMATS, LOG_LEVELS } from "../config/types.ts";
import { closeLogging, configureLogging, logger } from "../log/setup.ts";
import { Server } from "../server/server.ts";
import { VERSION } from "../version.ts";
import { choice, parseCommandArgs } from "./args.ts";
import { ExitCode } from "./exit_codes.ts";
import { removeReadyFile, writeReadyFile } from "./ready_file.ts";
import { loadRuleFile } from "./rule_file.ts";
import { installSignalHandlers } from "./signals.ts";
import { logSettingsOf, reloadRules } from "./reload.ts";
import { StatusService } from "./status_endpoint.ts";
import { logStatus, summaryLine } from "./summary.ts";

/** Help for `portbounce run`. */
export const RUN_HELP = `Usage: portbounce run [-c FILE] [options]

Runs the rules of FILE (default /etc/portbounce.toml) until SIGTERM or SIGINT.

Options:
  -c, --config FILE       rule file (default /etc/portbounce.toml)
      --log-format FMT    text or json (overrides [server] log_format)
      --log-level LEVEL   debug, info, warning or error (overrides [server] log_level)
      --ready-file PATH   once every listener is bound, write PATH (JSON: the bound
                          addresses); removed again on exit
  -h, --help              this help

Signals: SIGTERM/SIGINT drain and stop (a second one stops at once),
SIGHUP reloads the rules (and reopens log files), SIGUSR2 writes the
counters to the log.
Exit codes: 0 stopped, 1 runtime failure, 2 bad rule file or usage,
3 a listener could not be bound.`;

/** Runs `portbounce run ARGS`; resolves to the exit code. */
export async function runCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("run", args, {
    config: { type: "string", short: "c", default: "/etc/portbounce.toml" },
    "log-format": { type: "string" },
    "log-level": { type: "string" },
    "ready-file": { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(RUN_HELP);
    return ExitCode.ok;
  }
  const logFormat = choice("--log-format", values["log-format"], LOG_FORMATS);
  const logLevel = choice("--log-level", values["log-level"], LOG_LEVELS);

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
  const { config, listeners } = loaded;
  const overrides = { format: logFormat, level: logLevel };
  try {
    await configureLogging(logSettingsOf(config, overrides));
  } catch (error) {
    console.error(`portbounce: ${(error as Error).message}`);
    return ExitCode.runtime;
  }
  const log = logger();

  const bound = Server.bind(config.rules, listeners, log);
  if (!bound.ok) {
    for (const failure of bound.failures) {
      log.error("cannot bind {listener}: {error}", {
        listener: failure.key,
        error: failure.error,
      });
    }
    log.error(
      "{count} of {total} listeners could not be bound; none were kept",
      {
        count: bound.failures.length,
        total: listeners.length,
      },
    );
    await closeLogging();
    return ExitCode.bind;
  }
  const server = bound.server;
  const status = new StatusService(server, log, config);
  const statusError = await status.apply(config);
  if (statusError !== null) {
    const { hostname, port } = config.server.status!;
    log.error("cannot bind the status endpoint {address}: {error}", {
      address: formatAddress(hostname, port),
      error: statusError,
    });
    server.stopAccepting();
    await closeLogging();
    return ExitCode.bind;
  }
  server.serve();
  log.info(
    "portbounce {version} running {rules} rules from {source} on {count} listeners",
    {
      version: VERSION,
      rules: config.rules.length,
      source: config.source,
      count: listeners.length,
    },
  );
  for (const line of server.describeListeners()) {
    log.info("listening {line}", { line });
  }

  if (values["ready-file"]) {
    try {
      await writeReadyFile(values["ready-file"], server.boundAddresses(), status.address);
    } catch (error) {
      log.error("cannot write the ready file {path}: {error}", {
        path: values["ready-file"],
        error: (error as Error).message,
      });
      server.stopAccepting();
      server.closeAllSessions();
      await closeLogging();
      return ExitCode.runtime;
    }
  }

  let current = config;
  let stopping = false;
  let reloading = Promise.resolve();
  const stopped = Promise.withResolvers<void>();
  const signals = installSignalHandlers({
    stop(signal, count) {
      stopping = true;
      if (count === 1) {
        log.info(
          "{signal}: stopping; sessions may drain for up to {drain} ({signal} again to stop at once)",
          {
            signal,
            drain: formatDuration(current.server.drainTimeoutMs),
          },
        );
        server.shutdown(current.server.drainTimeoutMs).then(() => stopped.resolve());
      } else {
        log.warn("{signal} again: closing {sessions} sessions now", {
          signal,
          sessions: server.sessions.size,
        });
        server.closeAllSessions();
      }
    },
    reload() {
      // One reload at a time, in the order the signals came.
      reloading = reloading.then(async () => {
        if (stopping) return log.warn("SIGHUP ignored: stopping");
        log.info("SIGHUP: reloading {path}", { path: values.config });
        current = await reloadRules(values.config!, current, server, log, overrides);
        const error = await status.apply(current);
        if (error !== null) {
          log.error("reload: cannot bind the status endpoint: {error}", { error });
        }
      });
    },
    status() {
      logStatus(log, server.stats);
    },
  });

  await stopped.promise;
  signals.remove();
  await reloading;
  await status.close();
  if (values["ready-file"]) await removeReadyFile(values["ready-file"]);
  log.info("stopped: {summary}", { summary: summaryLine(server.stats) });
  await closeLogging();
  return ExitCode.ok;
}

function countOf(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
