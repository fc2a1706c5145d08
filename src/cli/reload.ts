/**
 * SIGHUP: reload the rule file into a running server. A bad file changes
 * nothing (every problem is logged); a good one is applied listener by
 * listener (see {@linkcode Server.reload}). Log files are reopened either way.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatProblem } from "../config/load.ts";
import type { Config, LogFormat, LogLevel } from "../config/types.ts";
import { configureLogging, type LogSettings } from "../log/setup.ts";
import type { ReloadSummary, Server } from "../server/server.ts";
import { loadRuleFile } from "./rule_file.ts";

/** Log settings from a rule file, with the command line's overrides. */
export function logSettingsOf(
  config: Config,
  overrides: { format?: LogFormat; level?: LogLevel },
): LogSettings {
  return {
    outputs: config.server.log,
    format: overrides.format ?? config.server.logFormat,
    level: overrides.level ?? config.server.logLevel,
  };
}

/**
 * Reloads `path` into `server`. Resolves to the config now in force (the new
 * one, or `current` when the new file is bad).
 */
export async function reloadRules(
  path: string,
  current: Config,
  server: Server,
  log: Logger,
  overrides: { format?: LogFormat; level?: LogLevel },
): Promise<Config> {
  const loaded = await loadRuleFile(path);
  if (!loaded.ok) {
    await reopenLogs(logSettingsOf(current, overrides), log);
    for (const problem of loaded.problems) {
      log.error("reload: {problem}", { problem: formatProblem(problem) });
    }
    log.error("reload failed: {count} problem(s) in {path}; the running rules are unchanged", {
      count: loaded.problems.length,
      path,
    });
    return current;
  }
  await reopenLogs(logSettingsOf(loaded.config, overrides), log);
  for (const warning of loaded.warnings) {
    log.warn("reload: {warning}", { warning: formatProblem(warning) });
  }
  const summary = server.reload(
    loaded.config.rules,
    loaded.listeners,
    loaded.config.server.drainTimeoutMs,
  );
  for (const failure of summary.listeners.failed) {
    log.error("reload: cannot bind {listener}: {error}", {
      listener: failure.key,
      error: failure.error,
    });
  }
  log.info("reload: {summary}", {
    summary: describeReload(summary, loaded.config.server.drainTimeoutMs),
  });
  return loaded.config;
}

async function reopenLogs(settings: LogSettings, log: Logger): Promise<void> {
  try {
    await configureLogging(settings);
  } catch (error) {
    log.error("reload: {error}; logging goes on to the previous outputs", {
      error: (error as Error).message,
    });
  }
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
