/**
 * The running daemon: what `run` and `forward` share. It binds every
 * listener (or none), handles signals, serves the status endpoint, writes the
 * ready file once all that holds, reloads the rule file on SIGHUP, and drains
 * on stop. Everything a test needs to run it in-process is an option.
 *
 * @module
 */
import { isolatesAsked } from "../rules/costs.ts";
import { countOf } from "../config/describe.ts";
import type { Logger, LogRecord } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import { formatProblem } from "../config/load.ts";
import type { Config, LogFormat, LogLevel, LogOutput, Rule, WorkerCount } from "../config/types.ts";
import { nextExpiry } from "../rules/expiry.ts";
import {
  collectState,
  restoreState,
  STATE_FILE_NAME,
  StateStore,
  STOP_WRITE_TIMEOUT_MS,
} from "./state_store.ts";
import { closeLogging, configureLogging, logger, type LogSettings } from "../log/setup.ts";
import type { ListenerPlan } from "../rules/plan.ts";
import { relayBuffers } from "../relay/buffer_pool.ts";
import { setLongTimeout, sleep, within } from "../relay/timers.ts";
import { VERSION } from "../version.ts";
import type { BindFailure } from "../server/listener_set.ts";
import {
  Engine,
  type EngineOptions,
  OUT_OF_DESCRIPTORS,
  type ReloadSummary,
} from "../server/engine.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  removeOwnPidFile,
  removeOwnReadyFile,
  writeAtomically,
  writeReadyFile,
} from "./ready_file.ts";
import {
  type LoadedRules as LoadedRuleFile,
  loadRuleFile,
  type PlanInputs,
  withoutExpired,
} from "../server/rule_file.ts";
import type { BoundAddresses, WorkerRules } from "../workers/protocol.ts";
import { WorkerPool } from "../workers/pool.ts";
import { installSignalHandlers } from "./signals.ts";
import { InspectorGuard } from "./inspector_guard.ts";
import {
  handoverPath,
  HandoverPoint,
  overlaps,
  requestTakeover,
  runningInstance,
  type Takeover,
} from "./handover.ts";
import { type PortClaim, PORTS_SHARE } from "../relay/port_claim.ts";
import { sessionViews, StatusService } from "./status_service.ts";
import type { ReloadReport } from "../status/report.ts";
import { inForce, logStatus, totals } from "./summary.ts";

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
  /** Written with the process id once started; removed on exit. */
  readonly pidFile?: string;
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
  /** `--state`: where the ledger and history are kept; wins over `[server] state`. */
  readonly statePath?: string;
  /** `--workers`: wins over `[server] workers`. */
  readonly workers?: WorkerCount;
  /** The module a worker isolate runs (default: the program's own main module). */
  readonly workerModule?: string | URL;
  /** The first wait before a dead worker is started again (tests shorten it). */
  readonly workerRestartDelayMs?: number;
  /** How long after a reload of `durationMs` the next may start (default `reloadSpacingMs`). */
  readonly reloadSpacing?: (durationMs: number) => number;
  /**
   * `--takeover`: start beside the instance named by the pid file and take
   * over from it (see handover.ts). Needs `pidFile`.
   */
  readonly takeover?: boolean;
}

/** A rule set ready to run. */
export interface LoadedRules {
  readonly config: Config;
  readonly listeners: readonly ListenerPlan[];
  /** What the plan was built from; workers build theirs from it. */
  readonly inputs?: PlanInputs;
}

/** A reload waits at most this long after the one before (see `reloadSpacingMs`). */
export const MAX_RELOAD_SPACING_MS = 10_000;

/**
 * How long after a reload that took `durationMs` the next may start: four
 * times as long (at most 10 s), so that reloads take at most a fifth of the
 * time and relaying the rest, however often SIGHUP comes. A reload of a small
 * file takes milliseconds and is not held back noticeably; one of 10,000
 * rules takes about half a second and spaces the next by about two.
 */
export function reloadSpacingMs(durationMs: number): number {
  return Math.min(MAX_RELOAD_SPACING_MS, 4 * Math.max(0, durationMs));
}

/** Rules as loaded from a rule file, or undefined for rules given otherwise (tests). */
function loadedFromText(file: LoadedRules | undefined): LoadedRuleFile | undefined {
  return file && "ok" in file && file.ok === true ? file as LoadedRuleFile : undefined;
}

/**
 * How many isolates accept TCP connections: as asked, where SO_REUSEPORT
 * lets isolates share a port (Linux) and there is a TCP listener to share.
 */
function workerCount(asked: WorkerCount, loaded: LoadedRules, log: Logger): number {
  const count = isolatesAsked(asked, navigator.hardwareConcurrency || 1);
  if (count <= 1) return 1;
  const why = Deno.build.os !== "linux"
    ? `isolates share a port (SO_REUSEPORT) on Linux only, not on ${Deno.build.os}`
    : !loaded.listeners.some((l) => l.protocol === "tcp")
    ? "no rule listens on TCP (UDP is served by one isolate)"
    : loaded.inputs === undefined
    ? "the rules were not loaded from text"
    : null;
  if (why === null) return count;
  log.warn("workers = {asked}: running with 1 worker: {why}", { asked: String(asked), why });
  return 1;
}

/** What a worker needs to serve the rules the engine runs now. */
function workerRules(engine: Engine, inputs: PlanInputs): WorkerRules {
  const addresses: BoundAddresses = {};
  for (const bound of engine.boundAddresses()) {
    if (bound.protocol === "tcp") {
      addresses[bound.key] = { hostname: bound.address, port: bound.port };
    }
  }
  return {
    inputs,
    addresses,
    budgets: engine.targets.sharedBudgets(engine.rules),
    sweepIntervalMs: engine.tuning.sweepIntervalMs,
    bufferBytes: relayBuffers.limitBytes,
    generation: engine.generation,
  };
}

/** Each isolate relays with its share of `[server] buffer_memory`. */
function bufferShare(bufferMemory: number, isolates: number): number {
  return Math.floor(bufferMemory / isolates);
}

/** Log settings from a rule file, with the command line's overrides. */
export function logSettingsOf(config: Config, overrides: LogOverrides = {}): LogSettings {
  return {
    outputs: overrides.outputs ?? config.server.log,
    format: overrides.format ?? config.server.logFormat,
    level: overrides.level ?? config.server.logLevel,
    syslogFacility: config.server.syslogFacility,
  };
}

/** How often the state file is written (and on stop). */
const STATE_INTERVAL_MS = 60_000;

/** Whether `file` is the state file `configured` names (a directory holds it). */
function samePath(file: string, configured: string): boolean {
  return file === configured || file === `${configured.replace(/\/+$/, "")}/${STATE_FILE_NAME}`;
}

/** A second stop of the same kind within this window is the same request (see `stop`). */
const REPEAT_WINDOW_MS = 500;
/** How long a reload waits for the rule file to be read, and for listen names to resolve. */
const RELOAD_READ_TIMEOUT_MS = 5_000;

/** A bouncer running a rule set. */
export class Daemon {
  readonly #done = Promise.withResolvers<number>();
  readonly #stopped = Promise.withResolvers<void>();
  #current: Config;
  /** The first stop request, once one came. */
  #stopping: { readonly why: string; readonly at: number } | undefined;
  #reloading = Promise.resolve();
  /** A reload asked for that has not started yet. */
  #queuedReload: Promise<void> | undefined;
  /** When the next reload may start (`performance.now()`), see `reloadSpacingMs`. */
  #nextReloadAt = 0;
  /** Aborted on stop and hand-over: a reload waiting for its turn goes at once. */
  readonly #hurry = new AbortController();
  /** Ends the wait of the reload waiting for its turn (a rule's `until` passed). */
  #cutWait: AbortController | undefined;
  /** Set once a hand-over began: a reload would bind what the new instance binds. */
  #handingOver = false;
  #cancelExitTimer: (() => void) | undefined;
  #signals: { remove(): void } | undefined;
  #inspectorGuard: InspectorGuard | undefined;
  #handover: HandoverPoint | undefined;
  /** Whether this instance's pid and ready files were removed (it happens once). */
  #filesRemoved = false;
  /** The rule file as loaded, with the rules whose `until` has passed (left out of what runs). */
  #file: LoadedRules | undefined;
  /** The rules the last reload put in force without a failure. */
  #applied: LoadedRules | undefined;
  /** Rules whose end was logged (once each). */
  readonly #expiredLogged = new Set<string>();
  #cancelExpiryTimer: (() => void) | undefined;
  /** Where the ledger and history are kept across restarts (`[server] state`), if anywhere. */
  #state: StateStore | undefined;
  #stateTimer: ReturnType<typeof setInterval> | undefined;
  /** Failed writes of the state file in use, or null without one (for /metrics). */
  readonly #stateWriteFailures = () => this.#state?.failures ?? null;

  private constructor(
    readonly engine: Engine,
    readonly status: StatusService,
    readonly log: Logger,
    config: Config,
    readonly options: DaemonOptions,
    /** The other isolates accepting TCP connections, if any. */
    readonly workers?: WorkerPool,
  ) {
    this.#current = config;
  }

  /**
   * Starts serving `loaded`. Resolves to the running daemon, or to the exit
   * code when it could not start (nothing is left bound then).
   */
  static async start(file: LoadedRules, options: DaemonOptions = {}): Promise<Daemon | number> {
    // Rules whose `until` has passed take no session: as if they were not in the file.
    const now = options.engine?.clock ?? Date.now;
    const { loaded, expired } = withoutExpired(file, now());
    const { config, listeners } = loaded;
    try {
      await configureLogging(logSettingsOf(config, options.overrides), options.logTap);
    } catch (error) {
      console.error(`portbounce: ${(error as Error).message}`);
      return ExitCode.runtime;
    }
    const log = logger();
    /** What was started so far, undone last first when starting fails. */
    const undo = new AsyncDisposableStack();
    undo.defer(closeLogging);
    // Signals from the start: until a handler is in, SIGHUP ends the process (the
    // default), and a takeover's new instance must not die once the old one let go.
    // Until the daemon runs, what they ask waits for it.
    // deno-lint-ignore prefer-const -- read by closures made before it is set
    let daemon: Daemon | undefined;
    /** The daemon once it runs (a takeover done): until then, signals wait. */
    // deno-lint-ignore prefer-const -- read by closures made before it is set
    let running: Daemon | undefined;
    const pending: { stop?: "SIGTERM" | "SIGINT"; reload?: boolean } = {};
    /** Set while giving up: a stop signal then closes the sessions left at once. */
    let givingUp = false;
    const handleSignals = options.handleSignals ?? true;
    const inspectorGuard = handleSignals ? InspectorGuard.hold(log) : undefined;
    undo.defer(() => inspectorGuard?.release());
    const signals = handleSignals
      ? installSignalHandlers({
        stop: (signal) =>
          running
            ? running.stop(signal)
            : givingUp
            ? engine?.closeAllSessions()
            : void (pending.stop ??= signal),
        reload: () => running ? void running.reload() : void (pending.reload = true),
        status: () =>
          running &&
          logStatus(
            log,
            running.engine.stats,
            sessionViews(running.engine),
            inForce(running.engine),
          ),
      })
      : undefined;
    undo.defer(() => signals?.remove());
    // deno-lint-ignore prefer-const -- read by closures made before it is set
    let engine: Engine | undefined;
    let pool: WorkerPool | undefined;
    // deno-lint-ignore prefer-const -- read by closures made before it is set
    let status: StatusService | undefined;
    let takeover: Takeover | undefined;
    // Made later, undone before the signals: the status endpoint after the workers.
    undo.defer(() => status?.close());
    undo.defer(() => pool?.terminate());
    /** Undoes what was started (a takeover's running instance carries on) and says why. */
    const giveUp = async (code: number): Promise<number> => {
      givingUp = true;
      takeover?.abandon();
      await undo.disposeAsync();
      return code;
    };

    // What the last run kept (the ledger, history): read before anything is bound.
    const statePath = options.statePath ?? config.server.state;
    const opened = statePath ? await StateStore.open(statePath, log) : null;
    if (opened && "refused" in opened) {
      log.error("{problem}", { problem: opened.refused });
      return await giveUp(ExitCode.usage);
    }
    const found = await findRunning(options, log);
    if (typeof found === "number") return await giveUp(found);
    takeover = found ?? undefined;
    const held = takeover?.running;
    const workers = workerCount(options.workers ?? config.server.workers, loaded, log);
    relayBuffers.limitBytes = bufferShare(config.server.bufferMemory, workers);
    const bound = Engine.bind(config.rules, listeners, log, {
      historyMs: config.server.historyMs,
      clients: { capacity: config.server.clients, names: config.server.clientNames },
      workers,
      // A later takeover binds beside what this instance binds (same user only).
      shareable: ownClaim(options) === "shareable",
      heldElsewhere: held &&
        ((plan) =>
          held.listeners.some((address) =>
            overlaps(address, { protocol: plan.protocol, address: plan.address, port: plan.port })
          )),
      ...options.engine,
    });
    if (!bound.ok) {
      logBindFailures(log, bound.failures, listeners.length);
      return await giveUp(ExitCode.bind);
    }
    engine = bound.engine;
    // Sessions accepted meanwhile end as on stop; none is reset.
    undo.defer(() => bound.engine.shutdown(config.server.drainTimeoutMs));
    if (opened?.saved) {
      restoreState(
        opened.saved,
        engine.stats,
        engine.monitor,
        config.rules,
        listeners.map((l) => l.key),
      );
      log.info("state: kept from {written}: the clients and history of {rules}", {
        written: new Date(opened.saved.written).toISOString(),
        rules: countOf(Object.keys(opened.saved.rules).length, "rule"),
      });
    }
    // Accepting at once: a connection the kernel gives this instance beside the running
    // one is served, not kept waiting for the workers, nor reset if a later step fails.
    engine.serve();
    if (workers > 1) {
      const started = await WorkerPool.start(
        workers - 1,
        workerRules(engine, loaded.inputs!),
        engine,
        log,
        options.workerModule ?? Deno.mainModule,
        options.workerRestartDelayMs,
      );
      if ("failures" in started) {
        logBindFailures(log, started.failures, listeners.length);
        return await giveUp(ExitCode.bind);
      }
      pool = started.pool;
    }
    status = new StatusService(engine, log, config);
    const wantedStatus = config.server.status;
    const statusHeld = held?.status != null && wantedStatus !== null &&
      overlaps(held.status, {
        protocol: "tcp",
        address: wantedStatus.hostname,
        port: wantedStatus.port,
      });
    // Where ports are not shared, the running instance's status endpoint is bound once it lets go.
    const statusWaits = statusHeld && !PORTS_SHARE;
    const statusError = statusWaits ? null : await status.apply(
      config,
      statusHeld ? "beside" : ownClaim(options),
    );
    if (statusError !== null) {
      logStatusBindFailure(log, config, statusError);
      return await giveUp(ExitCode.bind);
    }
    daemon = new Daemon(engine, status, log, config, options, pool);
    const made = daemon;
    undo.defer(async () => {
      await made.#handover?.close();
      made.#removeOwnFiles();
    });
    daemon.#file = file;
    daemon.#state = opened?.store;
    status.stateWriteFailures = daemon.#stateWriteFailures;
    pool?.serve();
    if (takeover && pending.stop) {
      // Stopped before asking the running instance to let go: it carries on.
      log.warn("{signal} while taking over: giving up; process {pid} runs on", {
        signal: pending.stop,
        pid: takeover.running.pid,
      });
      return await giveUp(ExitCode.ok);
    }
    if (takeover) {
      const failed = await daemon.#takeOver(takeover, statusWaits);
      takeover = undefined;
      if (failed !== null) return await giveUp(failed);
    }
    log.info("portbounce {version} running {rules} from {source} on {listeners}", {
      version: VERSION,
      rules: countOf(config.rules.length, "rule"),
      source: config.source,
      listeners: countOf(listeners.length, "listener"),
    });
    for (const line of (options.describe ?? ((e: Engine) => e.describeListeners()))(engine)) {
      log.info("listening {line}", { line });
    }
    if (pool) {
      log.info("{workers} isolates accept TCP connections, sharing each port (SO_REUSEPORT)", {
        workers,
      });
    }
    daemon.#logExpired(expired);
    daemon.#scheduleExpiry();
    daemon.#keepState();
    daemon.#signals = signals;
    daemon.#inspectorGuard = inspectorGuard;
    if (options.pidFile) {
      await daemon.#openHandoverPoint(options.pidFile);
      daemon.#armCrashCleanup();
      try {
        await writeAtomically(options.pidFile, `${Deno.pid}\n`);
      } catch (error) {
        log.error("cannot write the pid file {path}: {error}", {
          path: options.pidFile,
          error: (error as Error).message,
        });
        return await giveUp(ExitCode.runtime);
      }
    }
    if (options.readyFile) {
      try {
        await daemon.#writeReadyFile();
      } catch {
        return await giveUp(ExitCode.runtime);
      }
    }
    if (options.exitAfterMs !== undefined) {
      daemon.#cancelExitTimer = setLongTimeout(
        () => daemon!.stop(`--exit-after ${formatDuration(options.exitAfterMs!)}`),
        options.exitAfterMs,
      );
    }
    // Running: from now on, stopping undoes what was started (#finish).
    undo.move();
    daemon.#finish();
    running = daemon;
    // What was asked while starting.
    if (pending.stop) daemon.stop(pending.stop);
    else if (pending.reload) void daemon.reload();
    return daemon;
  }

  /**
   * The new instance's half of a takeover, once it serves beside the running
   * one: asks it to let go of its ports, then binds those that waited.
   * Resolves to null, or to the exit code when the takeover failed.
   */
  async #takeOver(takeover: Takeover, statusWaits: boolean): Promise<number | null> {
    const { log, engine } = this;
    const from = takeover.running.pid;
    const released = await takeover.release();
    if (!released) {
      log.warn("takeover: process {pid} did not confirm that it let go of its ports", {
        pid: from,
      });
    }
    const failures = await engine.bindWaiting();
    const statusError = statusWaits
      ? await this.status.apply(this.#current, ownClaim(this.options))
      : null;
    if (failures.length > 0 || statusError !== null) {
      // Too late to give the ports back: the running instance has let go of them.
      if (failures.length > 0) logBindFailures(log, failures, engine.listenerPlans().length);
      if (statusError !== null) logStatusBindFailure(log, this.#current, statusError);
      log.error(
        "takeover failed after process {pid} let go of its ports: stopping; neither instance serves now",
        { pid: from },
      );
      return ExitCode.bind;
    }
    log.info(
      "took over from process {pid}: it accepts no more and its sessions drain; this process ({self}) serves every listener",
      { pid: from, self: Deno.pid },
    );
    return null;
  }

  /** Listens for a later takeover beside the pid file (a warning if it cannot). */
  async #openHandoverPoint(pidFile: string): Promise<void> {
    const path = handoverPath(pidFile, Deno.pid);
    const opened = await HandoverPoint.open(path, {
      facts: () => ({
        pid: Deno.pid,
        stopping: this.#stopping !== undefined,
        listeners: this.engine.boundAddresses().map((b) => ({
          protocol: b.protocol,
          address: b.address,
          port: b.port,
        })),
        status: this.status.bound && { protocol: "tcp", ...this.status.bound },
      }),
      release: (pid) => this.#handOver(pid),
      reload: async () => {
        if (this.#stopping) {
          return { result: "refused", summary: "stopping: no reload", problems: [] };
        }
        const before = this.status.lastReload;
        await this.reload();
        const after = this.status.lastReload;
        return after !== null && after !== before
          ? after
          : { result: "refused", summary: "no reload was made (see the log)", problems: [] };
      },
    }, this.log);
    if ("running" in opened) {
      this.log.warn(
        "another portbounce (process {pid}) answers at {path}: this one cannot be taken over",
        { pid: opened.running, path },
      );
    } else if ("error" in opened) {
      this.log.warn("{error}; this instance cannot be taken over (run --takeover)", {
        error: opened.error,
      });
    } else this.#handover = opened;
  }

  /**
   * The running instance's half of a takeover: stop accepting, let go of every
   * port and of the pid and ready files, drain.
   */
  async #handOver(newPid: number): Promise<void> {
    // A reload under way finishes first: it must not bind, or write the ready file, after.
    // One that waits for its turn does not run at all.
    this.#handingOver = true;
    this.#hurry.abort();
    await this.#reloading;
    const released = this.engine.releasePorts().then(() => this.status.close()).then(() =>
      this.log.info("takeover: process {pid} holds every port now", { pid: newPid })
    );
    // Already stopping (SIGTERM came meanwhile): drain as that stop said, not at once.
    if (!this.#stopping) this.stop(`takeover by process ${newPid}`);
    // The new instance writes them once answered: remove them now, never after.
    this.#removeOwnFiles();
    // UDP ports are free now. Where TCP ports are shared, the new instance holds them
    // already: answer at once, each datagram sooner. Elsewhere it waits for them.
    if (!PORTS_SHARE) await released;
  }

  /**
   * Removes the pid and ready files where they still name this process: once
   * (whoever asks first, the hand-over or the end), so that no later read and
   * delete can meet a new instance's files.
   */
  #removeOwnFiles(): void {
    if (this.#filesRemoved) return;
    this.#filesRemoved = true;
    this.#forgetCrashCleanup();
    const { readyFile, pidFile } = this.options;
    if (readyFile) removeOwnReadyFile(readyFile);
    if (pidFile) removeOwnPidFile(pidFile);
  }

  /**
   * On an uncaught error the process ends without `#finish`: its pid and ready
   * files must not outlive it (a pid file naming a gone process, and no socket
   * beside it, would refuse the next `--takeover`).
   */
  #armCrashCleanup(): void {
    addEventListener("error", this.#crashCleanup);
    addEventListener("unhandledrejection", this.#crashCleanup);
  }

  #forgetCrashCleanup(): void {
    removeEventListener("error", this.#crashCleanup);
    removeEventListener("unhandledrejection", this.#crashCleanup);
  }

  readonly #crashCleanup = () => this.#removeOwnFiles();

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
   * `drain_timeout`), a second one closes every session at once. The same
   * signal again within a moment counts once: a terminal's Ctrl-C reaches
   * the process group, and `deno task` passes it on a second time.
   */
  stop(why: string): void {
    const { log, engine } = this;
    const now = engine.now();
    if (
      this.#stopping && why === this.#stopping.why && now - this.#stopping.at < REPEAT_WINDOW_MS
    ) {
      return;
    }
    if (!this.#stopping) {
      this.#stopping = { why, at: now };
      this.#hurry.abort();
      this.#cancelExpiryTimer?.();
      const drain = formatDuration(this.#current.server.drainTimeoutMs);
      // Said once no listener accepts any more.
      engine.stopAccepting().then(() =>
        log.info("{why}: stopping; sessions may drain for up to {drain} ({again})", {
          why,
          drain,
          again: why.startsWith("SIG")
            ? `${why} again to stop at once`
            : "SIGTERM or SIGINT to stop at once",
        })
      );
      engine.shutdown(this.#current.server.drainTimeoutMs).then(() => this.#stopped.resolve());
      return;
    }
    log.warn("{why}: closing {sessions} now", {
      why: why === this.#stopping.why ? `${why} again` : why,
      sessions: countOf(engine.sessions.size, "session"),
    });
    engine.closeAllSessions();
  }

  /**
   * Reloads the rule file (SIGHUP). One reload at a time; one asked while
   * another waits to start is that one; each starts no sooner than the
   * spacing after the last (`reloadSpacingMs`).
   */
  reload(): Promise<void> {
    // A reload asked while another waits to start is that one: it reads the file when
    // it starts, so it sees all a second would. A storm of SIGHUPs queues at most one.
    if (this.#queuedReload) return this.#queuedReload;
    // Never rejected: a reload that fails is logged; the next one, the hand-over and the
    // stop wait on this promise.
    const queued = this.#reloading.then(async () => {
      // Spaced after the last one (asks meanwhile join this one); a stop or hand-over
      // does not wait for the spacing.
      const wait = this.#nextReloadAt - performance.now();
      if (wait >= 1_000) {
        this.log.info("reload: in {wait} (reloads are spaced: see docs/operations.md)", {
          wait: formatDuration(Math.ceil(wait / 100) * 100),
        });
      }
      if (wait > 0) {
        // Log files are reopened at once (logrotate has moved them), and again by the reload.
        await this.#reopenLogs(this.#current);
        const cut = this.#cutWait = new AbortController();
        await sleep(wait, AbortSignal.any([this.#hurry.signal, cut.signal]));
        this.#cutWait = undefined;
      }
      this.#queuedReload = undefined;
      const started = performance.now();
      try {
        await this.#reloadOnce();
      } finally {
        const ended = performance.now();
        this.#nextReloadAt = ended +
          (this.options.reloadSpacing ?? reloadSpacingMs)(ended - started);
      }
    }).catch((error) => this.log.error("reload: {error}", { error: (error as Error).message }));
    this.#queuedReload = queued;
    this.#reloading = queued;
    return queued;
  }

  async #reloadOnce(): Promise<void> {
    const { log, options } = this;
    if (this.#stopping) return log.warn("SIGHUP ignored: stopping");
    if (this.#handingOver) return log.warn("SIGHUP ignored: handing over to a new instance");
    if (!options.ruleFile) {
      await this.#reopenLogs(this.#current);
      return log.info("SIGHUP: no rule file to reload; log files reopened");
    }
    const path = options.ruleFile;
    // A stuck read (a hung network mount) or name lookup must not hold up later
    // reloads, the shutdown or a hand-over: give up on each after a while. Not on
    // parsing: a large file in slices while relaying may take longer, and is not stuck.
    const loaded = await loadRuleFile(path, {
      previous: loadedFromText(this.#file),
      waitTimeoutMs: RELOAD_READ_TIMEOUT_MS,
    });
    if (!loaded.ok) {
      await this.#reopenLogs(this.#current);
      const problems = loaded.problems.map(formatProblem);
      for (const problem of problems) log.error("reload: {problem}", { problem });
      const summary = `${countOf(problems.length, "problem")} in ${path}`;
      log.error("reload failed: {summary}; the running rules are unchanged", { summary });
      this.#reloaded("refused", summary, problems);
      return;
    }
    if (loaded.config.rules.length === 0) {
      await this.#reopenLogs(this.#current);
      const problem = `${path} has no rules (a file caught while being written?)`;
      log.error("reload refused: {problem}; the running rules are unchanged", { problem });
      this.#reloaded("refused", problem, [problem]);
      return;
    }
    await this.#reopenLogs(loaded.config);
    for (const warning of loaded.warnings) {
      log.warn("reload: {warning}", { warning: formatProblem(warning) });
    }
    this.#file = loaded;
    const active = withoutExpired(loaded, this.engine.monitor.now());
    this.#logExpired(active.expired);
    if (this.#inForce(active.loaded)) {
      // The same text, names and interfaces: the same rules and plan (see loadRuleText).
      // Said as any reload is, so that what reads the log need not know this case.
      const { config, listeners } = active.loaded;
      const summary = `${
        describeReload({
          listeners: { added: [], kept: listeners.map((p) => p.key), removed: [], failed: [] },
          rules: {
            added: [],
            changed: [],
            removed: [],
            unchanged: config.rules.map((r) => r.name),
          },
          draining: 0,
          revoked: 0,
        }, config.server.reloadDrainTimeoutMs)
      } (the rule file is unchanged: nothing to redo)`;
      log.info("reload: {summary}", { summary });
      this.#reloaded("applied", summary, []);
      // As any reload does (a ready file removed meanwhile is written again).
      await this.#writeReadyFile();
      return;
    }
    await this.#apply(active.loaded, "reload");
  }

  /** Whether the last reload put `loaded`'s very rules and plan in force, and in full. */
  #inForce(loaded: LoadedRules): boolean {
    const applied = this.#applied;
    return applied !== undefined && loaded.config === applied.config &&
      loaded.listeners === applied.listeners;
  }

  /**
   * Puts `loaded` in force (a reload, or rules that ended): the engine, the
   * workers, history and alarms, the status endpoint, the ready file; logs
   * the reload line and keeps what came of it.
   */
  async #apply(loaded: LoadedRules, what: "reload" | "expired"): Promise<void> {
    const { log, options } = this;
    this.#applied = undefined; // Until it is in force in full.
    const { server } = loaded.config;
    relayBuffers.limitBytes = bufferShare(server.bufferMemory, (this.workers?.size ?? 0) + 1);
    const drainMs = server.reloadDrainTimeoutMs;
    let summary = await this.engine.reload(loaded.config.rules, loaded.listeners, {
      drainMs,
      enforce: server.reloadEnforcesRules,
    });
    if (this.workers) {
      // Every worker applies the new rules before the summary says they are in force.
      // Workers run only rules loaded from text, which carry their inputs.
      const failed = await this.workers.reload(workerRules(this.engine, loaded.inputs!));
      // Sessions the workers decided under the old rules and reported meanwhile.
      const late = this.engine.takeLate();
      summary = {
        ...summary,
        listeners: { ...summary.listeners, failed: [...summary.listeners.failed, ...failed] },
        draining: summary.draining + late.draining,
        revoked: summary.revoked + late.revoked,
      };
    }
    if (server.workers !== this.#current.server.workers && options.workers === undefined) {
      log.warn(
        "reload: workers = {workers} takes a restart (run --takeover starts one without refusing clients); {running} go on",
        {
          workers: String(server.workers),
          running: countOf((this.workers?.size ?? 0) + 1, "isolate"),
        },
      );
    }
    for (const failure of summary.listeners.failed) {
      log.error("reload: cannot bind {listener}: {error}", {
        listener: failure.key,
        error: failure.error,
      });
    }
    const described = describeReload(summary, drainMs);
    log.info(`${what}: {summary}`, { summary: described });

    this.engine.monitor.apply(
      loaded.config.rules,
      this.engine.listenerPlans().map((p) => p.key),
      server.historyMs,
      { capacity: server.clients, names: server.clientNames },
    );
    const statePath = options.statePath ?? loaded.config.server.state;
    if (statePath !== (options.statePath ?? this.#current.server.state)) {
      await this.#moveState(statePath);
    }
    this.#current = loaded.config;
    const error = await this.status.apply(loaded.config, ownClaim(options));
    if (error !== null) log.error("reload: cannot bind the status endpoint: {error}", { error });
    const failures = [
      ...summary.listeners.failed.map((f) => `cannot bind ${f.key}: ${f.error}`),
      ...(error === null ? [] : [`cannot bind the status endpoint: ${error}`]),
    ];
    this.#reloaded(failures.length > 0 ? "partly applied" : "applied", described, failures);
    // A reload of the same rules after a failure tries again what failed.
    this.#applied = failures.length > 0 ? undefined : loaded;
    await this.#writeReadyFile();
    this.#scheduleExpiry();
  }

  /**
   * Writes the state file now (a path that cannot be written is said at
   * once, not a minute later), then every minute (and on stop, see `#finish`).
   */
  #keepState(): void {
    clearInterval(this.#stateTimer);
    if (!this.#state) return;
    void this.#saveState();
    this.#stateTimer = setInterval(() => void this.#saveState(), STATE_INTERVAL_MS);
    Deno.unrefTimer(this.#stateTimer);
  }

  /** Writes what is kept across restarts, if a state file is configured. */
  async #saveState(): Promise<void> {
    await this.#state?.write(() =>
      collectState(this.engine.stats, this.engine.monitor, this.engine.rules)
    );
  }

  /** A reload that names another state path: write there from now on. */
  async #moveState(path: string | null): Promise<void> {
    if (path === null) {
      await this.#saveState();
      this.#state = undefined;
    } else if (this.#state === undefined || !samePath(this.#state.path, path)) {
      const opened = await StateStore.open(path, this.log);
      if ("refused" in opened) {
        this.log.error("reload: {problem}; the state goes on being kept where it was", {
          problem: opened.refused,
        });
        return;
      }
      this.#state = opened.store;
    }
    this.#keepState();
  }

  /** Logs each rule that ended, once (`expired`); forgets those that no longer have. */
  #logExpired(expired: readonly Rule[]): void {
    const names = new Set(expired.map((r) => r.name));
    for (const name of this.#expiredLogged) if (!names.has(name)) this.#expiredLogged.delete(name);
    for (const rule of expired) {
      if (this.#expiredLogged.has(rule.name)) continue;
      this.#expiredLogged.add(rule.name);
      this.log.warn("rule {rule} expired at {until}: it takes no new session", {
        alarm: "expired",
        rule: rule.name,
        until: new Date(rule.until!).toISOString(),
      });
    }
  }

  /** Arms a timer for the next rule to end; it is then left out as a reload would. */
  #scheduleExpiry(): void {
    this.#cancelExpiryTimer?.();
    this.#cancelExpiryTimer = undefined;
    if (!this.#file || this.#stopping) return;
    const now = this.engine.monitor.now();
    const next = nextExpiry(this.#file.config.rules, now);
    if (next === null) return;
    this.#cancelExpiryTimer = setLongTimeout(() => {
      // A rule's end does not wait for a reload's turn: the waiting reload goes now.
      this.#cutWait?.abort();
      this.#reloading = this.#reloading.then(() => this.#expire()).catch((error) =>
        this.log.error("expiry: {error}", { error: (error as Error).message })
      );
    }, Math.max(0, next - now));
  }

  /** Leaves out the rules that ended since the rules were last put in force. */
  async #expire(): Promise<void> {
    if (this.#stopping || !this.#file) return;
    const active = withoutExpired(this.#file, this.engine.monitor.now());
    if (active.expired.every((r) => this.#expiredLogged.has(r.name))) {
      return this.#scheduleExpiry(); // Woken early (a clock moved): wait on.
    }
    this.#logExpired(active.expired);
    await this.#apply(active.loaded, "expired");
  }

  /** Keeps what came of a reload for the status endpoint (`systemctl reload` cannot tell). */
  #reloaded(result: ReloadReport["result"], summary: string, problems: string[]): void {
    this.status.reloaded({
      at: new Date(this.engine.monitor.now()).toISOString(),
      result,
      summary,
      problems,
    });
  }

  /** Writes the ready file (again: a reload may have bound new listeners). */
  async #writeReadyFile(): Promise<void> {
    // Stopping: the ready file goes (and after a takeover it is another's).
    if (!this.options.readyFile || this.#stopping) return;
    try {
      await writeReadyFile(
        this.options.readyFile,
        this.engine.boundAddresses(),
        this.status.address,
      );
    } catch (error) {
      this.log.error("cannot write the ready file {path}: {error}", {
        path: this.options.readyFile,
        error: (error as Error).message,
      });
      throw error;
    }
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
    clearInterval(this.#stateTimer);
    // The last write, but not at any price: a hung disk must not keep the process from ending.
    const wrote = await within(
      this.#saveState().then(() => true),
      STOP_WRITE_TIMEOUT_MS,
      () => false,
    );
    if (!wrote) {
      this.log.warn("state: the write on stop did not finish within {timeout}; stopping anyway", {
        timeout: formatDuration(STOP_WRITE_TIMEOUT_MS),
      });
    }
    this.workers?.terminate();
    this.#cancelExitTimer?.();
    this.#signals?.remove();
    this.#inspectorGuard?.release();
    await this.#reloading;
    await this.#handover?.close();
    await this.status.close();
    this.#removeOwnFiles();
    const { text, fields } = totals(this.engine.stats);
    this.log.info("stopped: {summary}", { summary: text, ...fields });
    await closeLogging();
    this.#done.resolve(ExitCode.ok);
  }
}

/**
 * Before binding anything: with `--takeover`, the running instance to take
 * over from (null when there is none: start as usual); without, refuses to
 * start beside an instance that runs with the same pid file. A number is the
 * exit code of a refusal.
 */
async function findRunning(options: DaemonOptions, log: Logger): Promise<Takeover | null | number> {
  if (!options.pidFile) return null;
  if (!options.takeover) {
    const running = await runningInstance(options.pidFile);
    if (running === null) return null;
    log.error(
      "portbounce process {pid} already runs with the pid file {pidFile}: `run --takeover` replaces it; nothing was started",
      { pid: running.pid, pidFile: options.pidFile },
    );
    return ExitCode.runtime;
  }
  const contact = await requestTakeover(options.pidFile);
  if (contact.kind === "refused") {
    log.error("takeover refused: {why}; nothing was started", { why: contact.why });
    return ExitCode.runtime;
  }
  if (contact.kind === "none") {
    log.info("--takeover: no running instance to take over ({why}); starting as usual", {
      why: contact.why,
    });
    return null;
  }
  const { running } = contact.takeover;
  log.info("taking over from process {pid}: binding beside its {listeners}", {
    pid: running.pid,
    listeners: countOf(running.listeners.length, "listener"),
  });
  return contact.takeover;
}

function logStatusBindFailure(log: Logger, config: Config, error: string): void {
  const { hostname, port } = config.server.status!;
  log.error("cannot bind the status endpoint {address}: {error}", {
    address: formatAddress(hostname, port),
    error,
  });
}

/** How this instance binds its own TCP ports: shareable where a takeover may come. */
function ownClaim(options: DaemonOptions): PortClaim {
  return options.pidFile !== undefined ? "shareable" : "exclusive";
}

/** Starts `loaded` and runs it until stopped; resolves to the exit code. */
export async function runDaemon(loaded: LoadedRules, options: DaemonOptions): Promise<number> {
  const daemon = await Daemon.start(loaded, options);
  return typeof daemon === "number" ? daemon : await daemon.done;
}

/** Failures listed one per line, at most 10 per cause, with the cure where there is one. */
const FAILURES_SHOWN_PER_CAUSE = 10;

function logBindFailures(log: Logger, failures: readonly BindFailure[], total: number): void {
  const byCause = Map.groupBy(failures, (failure) => failure.error);
  for (const [error, group] of byCause) {
    for (const failure of group.slice(0, FAILURES_SHOWN_PER_CAUSE)) {
      log.error("cannot bind {listener}: {error}", { listener: failure.key, error });
    }
    if (group.length > FAILURES_SHOWN_PER_CAUSE) {
      log.error("... and {more} more listeners: {error}", {
        more: group.length - FAILURES_SHOWN_PER_CAUSE,
        error,
      });
    }
    if (/too many open files/i.test(error)) log.error(OUT_OF_DESCRIPTORS);
  }
  log.error("{count} of {total} listeners could not be bound; none were kept", {
    count: failures.length,
    total,
  });
}

/**
 * `listeners: 1 added (udp 127.0.0.1:53), 2 kept, 1 removed (tcp ...; draining up to 30s);
 * rules: 1 added (dns), 1 changed (web), 1 removed (mail), 1 unchanged`
 */
export function describeReload(summary: ReloadSummary, drainMs: number): string {
  const list = (items: readonly string[]) => items.length > 0 ? ` (${items.join(", ")})` : "";
  const { listeners, rules } = summary;
  const removed = listeners.removed.length > 0
    ? `${listeners.removed.length} removed (${listeners.removed.join(", ")})`
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
  }, ${rules.unchanged.length} unchanged; sessions: ${summary.draining} draining${
    summary.draining > 0
      ? ` (${drainMs > 0 ? `up to ${formatDuration(drainMs)}` : "until they end"})`
      : ""
  }, ${summary.revoked} revoked`;
}
