/**
 * The running daemon: what `run` and `forward` share. It binds every
 * listener (or none), handles signals, serves the status endpoint, writes the
 * ready file once all that holds, reloads the rule file on SIGHUP, and drains
 * on stop. Everything a test needs to run it in-process is an option.
 *
 * @module
 */
import type { Logger, LogRecord } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import { formatProblem } from "../config/load.ts";
import type { Config, LogFormat, LogLevel, LogOutput } from "../config/types.ts";
import { closeLogging, configureLogging, logger, type LogSettings } from "../log/setup.ts";
import type { ListenerPlan } from "../rules/plan.ts";
import { relayBuffers } from "../relay/buffer_pool.ts";
import { VERSION } from "../version.ts";
import { Engine, type EngineOptions, type ReloadSummary } from "./engine.ts";
import { ExitCode } from "./exit_codes.ts";
import { removeReadyFile, writeReadyFile } from "./ready_file.ts";
import { loadRuleFile } from "./rule_file.ts";
import { installSignalHandlers } from "./signals.ts";
import { StatusService } from "./status_service.ts";
import { logStatus, summaryLine } from "./summary.ts";

/** Log settings from the command line (or a test) that win over `[server]`. */
export interface LogOverrides {
  readonly format?: LogFormat;
  readonly level?: LogLevel;
  /** Where lines go instead of `[server] log` (in-process tests: nowhere). */
  readonly outputs?: readonly LogOutput[];
}

/** How to run. */
export interface DaemonOptions {
  readonly overrides?: LogOverrides;
  /** Written once every listener is bound and signals are handled; removed on exit. */
  readonly readyFile?: string;
  /** Stop (as on SIGTERM) after this long. */
  readonly exitAfterMs?: number;
  /** The rule file SIGHUP reloads; without one SIGHUP only reopens log files. */
  readonly ruleFile?: string;
  /** The "listening ..." lines; by default one per listener with its rules. */
  readonly describe?: (engine: Engine) => string[];
  /** Whether to handle process signals (default true; in-process tests say false). */
  readonly handleSignals?: boolean;
  /** Engine options (tests inject timings). */
  readonly engine?: EngineOptions;
  /** Also give every log record to this (tests capture structured events). */
  readonly logTap?: (record: LogRecord) => void;
}

/** A rule set ready to run. */
export interface LoadedRules {
  readonly config: Config;
  readonly listeners: readonly ListenerPlan[];
}

/** Log settings from a rule file, with the command line's overrides. */
export function logSettingsOf(config: Config, overrides: LogOverrides = {}): LogSettings {
  return {
    outputs: overrides.outputs ?? config.server.log,
    format: overrides.format ?? config.server.logFormat,
    level: overrides.level ?? config.server.logLevel,
  };
}

/** A bouncer running a rule set. */
export class Daemon {
  readonly #done = Promise.withResolvers<number>();
  readonly #stopped = Promise.withResolvers<void>();
  #current: Config;
  #stops = 0;
  #reloading = Promise.resolve();
  #exitTimer: ReturnType<typeof setTimeout> | undefined;
  #signals: { remove(): void } | undefined;

  private constructor(
    readonly engine: Engine,
    readonly status: StatusService,
    readonly log: Logger,
    config: Config,
    readonly options: DaemonOptions,
  ) {
    this.#current = config;
  }

  /**
   * Starts serving `loaded`. Resolves to the running daemon, or to the exit
   * code when it could not start (nothing is left bound then).
   */
  static async start(loaded: LoadedRules, options: DaemonOptions = {}): Promise<Daemon | number> {
    const { config, listeners } = loaded;
    try {
      await configureLogging(logSettingsOf(config, options.overrides), options.logTap);
    } catch (error) {
      console.error(`portbounce: ${(error as Error).message}`);
      return ExitCode.runtime;
    }
    const log = logger();
    relayBuffers.limitBytes = config.server.bufferMemory;
    const bound = Engine.bind(config.rules, listeners, log, options.engine);
    if (!bound.ok) {
      for (const failure of bound.failures) {
        log.error("cannot bind {listener}: {error}", {
          listener: failure.key,
          error: failure.error,
        });
      }
      log.error("{count} of {total} listeners could not be bound; none were kept", {
        count: bound.failures.length,
        total: listeners.length,
      });
      await closeLogging();
      return ExitCode.bind;
    }
    const engine = bound.engine;
    const status = new StatusService(engine, log, config);
    const statusError = await status.apply(config);
    if (statusError !== null) {
      const { hostname, port } = config.server.status!;
      log.error("cannot bind the status endpoint {address}: {error}", {
        address: formatAddress(hostname, port),
        error: statusError,
      });
      engine.stopAccepting();
      await closeLogging();
      return ExitCode.bind;
    }
    const daemon = new Daemon(engine, status, log, config, options);
    engine.serve();
    log.info("portbounce {version} running {rules} from {source} on {listeners}", {
      version: VERSION,
      rules: countOf(config.rules.length, "rule"),
      source: config.source,
      listeners: countOf(listeners.length, "listener"),
    });
    for (const line of (options.describe ?? ((e: Engine) => e.describeListeners()))(engine)) {
      log.info("listening {line}", { line });
    }
    // Signals first: once the ready file exists, a signal must find its handler.
    if (options.handleSignals ?? true) {
      daemon.#signals = installSignalHandlers({
        stop: (signal) => daemon.stop(signal),
        reload: () => void daemon.reload(),
        status: () => logStatus(log, engine.stats),
      });
    }
    if (options.readyFile) {
      try {
        await writeReadyFile(options.readyFile, engine.boundAddresses(), status.address);
      } catch (error) {
        log.error("cannot write the ready file {path}: {error}", {
          path: options.readyFile,
          error: (error as Error).message,
        });
        daemon.#signals?.remove();
        engine.stopAccepting();
        engine.closeAllSessions();
        await status.close();
        await closeLogging();
        return ExitCode.runtime;
      }
    }
    if (options.exitAfterMs !== undefined) {
      daemon.#exitTimer = setTimeout(() => daemon.stop("--exit-after"), options.exitAfterMs);
    }
    daemon.#finish();
    return daemon;
  }

  /** The rules in force. */
  get config(): Config {
    return this.#current;
  }

  /** Resolves to the exit code once the daemon has stopped. */
  get done(): Promise<number> {
    return this.#done.promise;
  }

  /**
   * Stops: the first call drains (sessions may finish for up to
   * `drain_timeout`), a second one closes every session at once.
   */
  stop(why: string): void {
    const count = ++this.#stops;
    const { log, engine } = this;
    if (count === 1) {
      log.info(
        "{why}: stopping; sessions may drain for up to {drain} ({why} again to stop at once)",
        { why, drain: formatDuration(this.#current.server.drainTimeoutMs) },
      );
      engine.shutdown(this.#current.server.drainTimeoutMs).then(() => this.#stopped.resolve());
    } else {
      log.warn("{why} again: closing {sessions} sessions now", {
        why,
        sessions: engine.sessions.size,
      });
      engine.closeAllSessions();
    }
  }

  /** Reloads the rule file (SIGHUP). One reload at a time, in the order asked. */
  reload(): Promise<void> {
    this.#reloading = this.#reloading.then(() => this.#reloadOnce());
    return this.#reloading;
  }

  async #reloadOnce(): Promise<void> {
    const { log, options } = this;
    if (this.#stops > 0) return log.warn("SIGHUP ignored: stopping");
    if (!options.ruleFile) {
      await this.#reopenLogs(this.#current);
      return log.info("SIGHUP: no rule file to reload; log files reopened");
    }
    const path = options.ruleFile;
    const loaded = await loadRuleFile(path);
    if (!loaded.ok) {
      await this.#reopenLogs(this.#current);
      for (const problem of loaded.problems) {
        log.error("reload: {problem}", { problem: formatProblem(problem) });
      }
      log.error("reload failed: {count} problem(s) in {path}; the running rules are unchanged", {
        count: loaded.problems.length,
        path,
      });
      return;
    }
    await this.#reopenLogs(loaded.config);
    for (const warning of loaded.warnings) {
      log.warn("reload: {warning}", { warning: formatProblem(warning) });
    }
    relayBuffers.limitBytes = loaded.config.server.bufferMemory;
    const drainMs = loaded.config.server.drainTimeoutMs;
    const summary = this.engine.reload(loaded.config.rules, loaded.listeners, drainMs);
    for (const failure of summary.listeners.failed) {
      log.error("reload: cannot bind {listener}: {error}", {
        listener: failure.key,
        error: failure.error,
      });
    }
    log.info("reload: {summary}", { summary: describeReload(summary, drainMs) });
    this.#current = loaded.config;
    const error = await this.status.apply(loaded.config);
    if (error !== null) log.error("reload: cannot bind the status endpoint: {error}", { error });
  }

  async #reopenLogs(config: Config): Promise<void> {
    try {
      await configureLogging(logSettingsOf(config, this.options.overrides), this.options.logTap);
    } catch (error) {
      this.log.error("reload: {error}; logging goes on to the previous outputs", {
        error: (error as Error).message,
      });
    }
  }

  /** Waits for the stop, then cleans up and resolves `done`. */
  async #finish(): Promise<void> {
    await this.#stopped.promise;
    clearTimeout(this.#exitTimer);
    this.#signals?.remove();
    await this.#reloading;
    await this.status.close();
    if (this.options.readyFile) await removeReadyFile(this.options.readyFile);
    this.log.info("stopped: {summary}", { summary: summaryLine(this.engine.stats) });
    await closeLogging();
    this.#done.resolve(ExitCode.ok);
  }
}

/** Starts `loaded` and runs it until stopped; resolves to the exit code. */
export async function runDaemon(loaded: LoadedRules, options: DaemonOptions): Promise<number> {
  const daemon = await Daemon.start(loaded, options);
  return typeof daemon === "number" ? daemon : await daemon.done;
}

function countOf(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/**
 * `listeners: 1 added (udp 127.0.0.1:53), 2 kept, 1 removed (tcp ...; draining up to 30s);
 * rules: 1 added (dns), 1 changed (web), 1 removed (mail), 1 unchanged`
 */
export function describeReload(summary: ReloadSummary, drainMs: number): string {
  const list = (items: readonly string[]) => items.length > 0 ? ` (${items.join(", ")})` : "";
  const { listeners, rules } = summary;
  const removed = listeners.removed.length > 0
    ? `${listeners.removed.length} removed (${listeners.removed.join(", ")}; draining up to ${
      formatDuration(drainMs)
    })`
    : "0 removed";
  const failed = listeners.failed.length > 0
    ? `, ${listeners.failed.length} failed to bind${list(listeners.failed.map((f) => f.key))}`
    : "";
  return `listeners: ${listeners.added.length} added${
    list(listeners.added)
  }, ${listeners.kept.length} kept, ${removed}${failed}; rules: ${rules.added.length} added${
    list(rules.added)
  }, ${rules.changed.length} changed${list(rules.changed)}, ${rules.removed.length} removed${
    list(rules.removed)
  }, ${rules.unchanged.length} unchanged`;
}
