/**
 * The whole daemon in the test's own process: started from rule-file text on
 * loopback, its log captured as structured entries, its timings shortened
 * where a test would otherwise sleep. No signals: the test calls `reload()`
 * and `stop()` itself.
 *
 * @module
 */
import type { RelayTuning } from "../src/relay/host.ts";
import type { ReverseLookup } from "../src/server/client_names.ts";
import { DEFAULT_TUNING } from "../src/relay/host.ts";
import type { Dialer } from "../src/relay/dial.ts";
import { jsonFormatter } from "../src/log/events.ts";
import { Daemon } from "../src/daemon/daemon.ts";
import { loadRuleFile } from "../src/server/rule_file.ts";
import { EntryLog, type LogEntry, parseEntry } from "./log_entries.ts";

/** A daemon running in this process. */
export interface InProcessDaemon extends AsyncDisposable {
  readonly daemon: Daemon;
  /** Where the rule file lives (rewrite it, then `reload()`). */
  readonly ruleFile: string;
  readonly log: EntryLog;
  /** Port actually bound by the n-th listener. */
  port(index?: number): number;
  /** Rewrites the rule file and reloads it. */
  reload(rules?: string): Promise<void>;
  /** Stops (drains) and resolves to the exit code. */
  stop(): Promise<number>;
}

/** Options for {@linkcode startDaemon}. */
export interface StartOptions {
  readonly tuning?: Partial<RelayTuning>;
  readonly dialer?: Dialer;
  /** The wall clock of history, alarms and session times. */
  readonly clock?: () => number;
  /** The monotonic clock of limits and rate-limited events (move it instead of sleeping). */
  readonly monotonic?: () => number;
  /** Isolates accepting TCP connections (the others run {@linkcode WORKER_MODULE}). */
  readonly workers?: number;
  /** What a worker runs instead (tests of a worker that fails). */
  readonly workerModule?: string | URL;
  /** The first wait before a dead worker is started again. */
  readonly workerRestartDelayMs?: number;
  readonly reloadSpacing?: (durationMs: number) => number;
  /** The pid file (and so the hand-over socket beside it, for takeovers). */
  readonly pidFile?: string;
  /** How client names are found (the ledger's reverse DNS). */
  readonly reverseLookup?: ReverseLookup;
}

/** The worker isolates' module, as the CLI's main module loads it. */
export const WORKER_MODULE = new URL("../src/workers/worker.ts", import.meta.url);

/** Starts the daemon on `rules` (rule-file text); throws with the problems or log if it cannot. */
export async function startDaemon(
  rules: string,
  options: StartOptions = {},
): Promise<InProcessDaemon> {
  const dir = await Deno.makeTempDir({ prefix: "portbounce-inproc-" });
  const ruleFile = `${dir}/rules.toml`;
  await Deno.writeTextFile(ruleFile, rules);
  const loaded = await loadRuleFile(ruleFile);
  if (!loaded.ok) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(loaded.problems.map((p) => `${p.where}: ${p.message}`).join("\n"));
  }
  const log = new EntryLog();
  const started = await Daemon.start(loaded, {
    overrides: { outputs: [] },
    ruleFile,
    handleSignals: false,
    workers: options.workers,
    workerModule: options.workerModule ?? WORKER_MODULE,
    workerRestartDelayMs: options.workerRestartDelayMs,
    reloadSpacing: options.reloadSpacing,
    pidFile: options.pidFile,
    engine: {
      tuning: { ...DEFAULT_TUNING, ...options.tuning },
      dialer: options.dialer,
      clock: options.clock,
      monotonic: options.monotonic,
      // No DNS from tests unless one asks: every client is nameless.
      reverseLookup: options.reverseLookup ?? (() => Promise.resolve(null)),
    },
    logTap: (record) => log.add(parseEntry(jsonFormatter(record)) as LogEntry),
  });
  if (typeof started === "number") {
    await Deno.remove(dir, { recursive: true });
    throw new Error(
      `daemon did not start (exit ${started}):\n${
        log.all().map((e) => JSON.stringify(e)).join("\n")
      }`,
    );
  }
  const daemon = started;
  let stopped: Promise<number> | undefined;
  const stop = () => {
    if (!stopped) {
      daemon.stop("test");
      stopped = daemon.done;
    }
    return stopped;
  };
  return {
    daemon,
    ruleFile,
    log,
    port: (index = 0) => daemon.engine.boundAddresses()[index].port,
    async reload(next) {
      if (next !== undefined) await Deno.writeTextFile(ruleFile, next);
      await daemon.reload();
    },
    stop,
    async [Symbol.asyncDispose]() {
      if (!stopped) {
        daemon.stop("test");
        daemon.stop("test, at once"); // Another cause: close what is left at once.
        stopped = daemon.done;
      }
      await stopped;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
