/**
 * Serving a loaded rule set until it is told to stop: what `run` and
 * `forward` share. Binds everything (or nothing), writes the ready file,
 * handles signals, drains, and logs a summary on exit.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { Config, LogFormat, LogLevel } from "../config/types.ts";
import { closeLogging, configureLogging, logger } from "../log/setup.ts";
import type { ListenerPlan } from "../rules/plan.ts";
import { Server } from "../server/server.ts";
import { VERSION } from "../version.ts";
import { ExitCode } from "./exit_codes.ts";
import { removeReadyFile, writeReadyFile } from "./ready_file.ts";
import { logSettingsOf } from "./reload.ts";
import { installSignalHandlers } from "./signals.ts";
import { StatusService } from "./status_endpoint.ts";
import { logStatus, summaryLine } from "./summary.ts";

/** How to serve. */
export interface ServeOptions {
  /** Command-line log settings that win over `[server]`. */
  readonly overrides: { readonly format?: LogFormat; readonly level?: LogLevel };
  /** Written once every listener is bound; removed on exit. */
  readonly readyFile?: string;
  /** Stop (as on SIGTERM) after this long. */
  readonly exitAfterMs?: number;
  /** Reloads the rules on SIGHUP; without it SIGHUP only reopens log files. */
  readonly reload?: (current: Config, server: Server, log: Logger) => Promise<Config>;
  /** The "listening ..." lines; by default one per listener with its rules. */
  readonly describe?: (server: Server) => string[];
}

function describeListeners(server: Server): string[] {
  return server.describeListeners();
}

/** Serves `loaded` until stopped; resolves to the exit code. */
export async function serveRules(
  loaded: { readonly config: Config; readonly listeners: ListenerPlan[] },
  options: ServeOptions,
): Promise<number> {
  const { config, listeners } = loaded;
  const { overrides, readyFile } = options;
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
  for (const line of (options.describe ?? describeListeners)(server)) {
    log.info("listening {line}", { line });
  }

  if (readyFile) {
    try {
      await writeReadyFile(readyFile, server.boundAddresses(), status.address);
    } catch (error) {
      log.error("cannot write the ready file {path}: {error}", {
        path: readyFile,
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
  let stops = 0;
  const stop = (signal: string) => {
    const count = ++stops;
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
  };
  let exitTimer: ReturnType<typeof setTimeout> | undefined;
  if (options.exitAfterMs !== undefined) {
    exitTimer = setTimeout(() => stop("--exit-after"), options.exitAfterMs);
  }
  const signals = installSignalHandlers({
    stop,
    reload() {
      // One reload at a time, in the order the signals came.
      reloading = reloading.then(async () => {
        if (stopping) return log.warn("SIGHUP ignored: stopping");
        if (!options.reload) {
          await configureLogging(logSettingsOf(current, overrides)).catch(() => {});
          return log.info("SIGHUP: no rule file to reload; log files reopened");
        }
        current = await options.reload(current, server, log);
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
  clearTimeout(exitTimer);
  signals.remove();
  await reloading;
  await status.close();
  if (readyFile) await removeReadyFile(readyFile);
  log.info("stopped: {summary}", { summary: summaryLine(server.stats) });
  await closeLogging();
  return ExitCode.ok;
}
