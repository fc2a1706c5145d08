/**
 * Starting, moving and stopping the status endpoint of a running daemon, and
 * what it shows: the report built from the engine's counters and sessions.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { Config } from "../config/types.ts";
import { loggingHealth } from "../log/setup.ts";
import { relayBuffers } from "../relay/buffer_pool.ts";
import { describeBindError, describeIoError } from "../relay/errors.ts";
import type { PortClaim } from "../relay/port_claim.ts";
import { serveStatus, type StatusEndpoint } from "../status/http.ts";
import { renderMetrics } from "../status/metrics.ts";
import { inForce } from "./summary.ts";
import { chooseWindow, renderStatusPage } from "../status/page.ts";
import {
  buildStatusReport,
  type ReloadReport,
  type SessionView,
  type StatusInput,
} from "../status/report.ts";
import { answer, BadQuery, isWildcard, RenderCache } from "../status/routes.ts";
import {
  buildClientsReport,
  type ClientsQuery,
  type ClientsReport,
  parseClientsQuery,
} from "../status/clients.ts";

/** The page lists who used each rule within this long. */
const PAGE_CLIENTS_WINDOW_MS = 24 * 3_600_000;
import { VERSION } from "../version.ts";
import type { Engine } from "../server/engine.ts";
import { formatTarget, type ListenerPlan } from "../rules/plan.ts";

/** The live sessions as the status lists them, oldest first. */
export function sessionViews(engine: Engine): SessionView[] {
  // The clocks of session times and drain deadlines (tests move them).
  const wall = engine.sessions.clock();
  const mono = performance.now();
  return engine.sessions.list().map((s) => ({
    rule: s.rule.name,
    protocol: s.setup.protocol,
    client: s.setup.client,
    listen: s.setup.listen,
    target: s.target,
    local: s.local,
    started: new Date(s.startedAt).toISOString(),
    age_s: Math.round((wall - s.startedAt) / 1000),
    idle_s: Math.round((mono - s.lastActivity) / 1000),
    bytes_up: s.bytesUp,
    bytes_down: s.bytesDown,
    state: s.draining ? "draining" : "active",
    drain_left_s: s.drainDeadline === null
      ? null
      : Math.max(0, Math.round((s.drainDeadline - wall) / 1000)),
  }));
}

/** Each rule's distinct targets (`host:port`), in the order its listeners name them. */
export function ruleTargets(listeners: readonly ListenerPlan[]): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const listener of listeners) {
    for (const { rule, targets } of listener.bindings) {
      const list = found.get(rule.name) ?? [];
      for (const target of targets.map(formatTarget)) if (!list.includes(target)) list.push(target);
      found.set(rule.name, list);
    }
  }
  return found;
}

/** Where the status endpoint listens. */
type StatusAddress = NonNullable<Config["server"]["status"]>;

/** The status endpoint as configured by the rule file in force. */
export class StatusService {
  #endpoint: StatusEndpoint | null = null;
  #lastReload: ReloadReport | null = null;
  #address: string | null = null;
  readonly #cache = new RenderCache();

  constructor(readonly engine: Engine, readonly log: Logger, private config: Config) {}

  /** Failed writes of the state file, or null without one (the daemon tells). */
  stateWriteFailures: () => number | null = () => null;

  /** What came of the latest reload, or null before any. */
  get lastReload(): ReloadReport | null {
    return this.#lastReload;
  }

  /** What the report is built from, now; `historyMinutes` of history per rule. */
  input(historyMinutes = 60): StatusInput {
    const health = loggingHealth();
    const monitor = this.engine.monitor;
    const now = monitor.now();
    return {
      version: VERSION,
      source: this.config.source,
      startedAt: this.engine.startedAt,
      now,
      rules: this.engine.rules,
      listeners: this.engine.listenerStates(),
      stats: this.engine.stats,
      sessions: sessionViews(this.engine),
      log: {
        lines_failed: health.failed,
        lines_dropped: health.dropped,
        last_error: health.lastError,
      },
      buffers: {
        budget_bytes: relayBuffers.limitBytes,
        in_use_bytes: relayBuffers.inUse,
        refused: relayBuffers.refused,
      },
      targets: this.engine.targets.states(),
      ruleTargets: ruleTargets(this.engine.listenerPlans()),
      history: (key, minutes) => monitor.history.buckets(key, minutes, now, this.#counters(key)),
      historyMinutes: Math.min(historyMinutes, monitor.history.minutes - 1),
      lastReload: this.#lastReload,
      alarms: {
        active: monitor.alarms.active(),
        recent: monitor.alarms.recent().map((a) => ({ ...a, at: new Date(a.at).toISOString() })),
        counts: [...monitor.alarms.counts].map(([key, count]) => {
          const [rule, kind] = key.split("\u0000");
          return { rule, kind, count };
        }),
      },
    };
  }

  #counters(key: string) {
    const name = key.slice(key.indexOf(":") + 1);
    return key.startsWith("rule:")
      ? this.engine.stats.rules.get(name)
      : this.engine.stats.listeners.get(name);
  }

  /** `/history.json`: the whole window, every rule and listener. */
  historyJson(): string {
    const monitor = this.engine.monitor;
    const minutes = monitor.history.minutes - 1;
    const now = monitor.now();
    const of = (key: string) => monitor.history.buckets(key, minutes, now, this.#counters(key));
    return JSON.stringify({
      minutes,
      rules: this.engine.rules.map((r) => ({ name: r.name, history: of(`rule:${r.name}`) })),
      listeners: this.engine.listenerPlans().map((l) => ({
        key: l.key,
        history: of(`listener:${l.key}`),
      })),
    }) + "\n";
  }

  /** Each rule's clients, most recently seen first, with their names as known now. */
  clientsReport(query: ClientsQuery): ClientsReport {
    const monitor = this.engine.monitor;
    const names = monitor.names;
    return buildClientsReport(
      this.engine.rules,
      this.engine.stats,
      (address) => names?.nameOf(address) ?? null,
      query,
      monitor.now(),
    );
  }

  /** `/clients.json`. */
  clientsJson(query: ClientsQuery): string {
    // One line: a ledger of thousands of clients is half the size without indentation.
    return JSON.stringify(this.clientsReport(query)) + "\n";
  }

  #answer = (method: string, target: string) => {
    const now = performance.now();
    const cached = (key: string, render: () => string) => this.#cache.get(key, render, now);
    const report = (minutes?: number) => buildStatusReport(this.input(minutes));
    return answer(method, target, {
      page: (query) => {
        const monitor = this.engine.monitor;
        const window = chooseWindow(
          query.get("window"),
          monitor.now() - this.engine.startedAt,
          monitor.history.minutes - 1,
        );
        return cached(
          `/?${window.chosen}`,
          () =>
            renderStatusPage(report(window.minutes), window, {
              report: this.clientsReport({ rule: null, withinMs: PAGE_CLIENTS_WINDOW_MS }),
              windowMs: PAGE_CLIENTS_WINDOW_MS,
            }),
        );
      },
      statusJson: (query) => {
        const asked = Number(query.get("history") ?? 60);
        // Bounded by the history kept: one cached rendering per value at most.
        const minutes = Number.isInteger(asked) && asked >= 0
          ? Math.min(asked, this.engine.monitor.history.minutes - 1)
          : 60;
        return cached(
          `/status.json?${minutes}`,
          () => JSON.stringify(report(minutes), null, 2) + "\n",
        );
      },
      historyJson: () => cached("/history.json", () => this.historyJson()),
      metrics: () =>
        cached(
          "/metrics",
          () =>
            renderMetrics(
              report(),
              this.engine.stats,
              this.engine.startedAt,
              inForce(this.engine),
              {
                nameLookups: this.engine.monitor.names?.lookups ?? 0,
                nameFailures: this.engine.monitor.names?.failures ?? 0,
                stateWriteFailures: this.stateWriteFailures(),
              },
            ),
        ),
      clientsJson: (params) => {
        const query = parseClientsQuery(params, this.engine.rules);
        if ("error" in query) throw new BadQuery(query.error);
        return cached(
          `/clients.json?${query.rule}&${query.withinMs}`,
          () => this.clientsJson(query),
        );
      },
      sessionsJson: () =>
        cached(
          "/sessions.json",
          () => JSON.stringify({ sessions: sessionViews(this.engine) }, null, 2) + "\n",
        ),
    });
  };

  /**
   * Serves the endpoint `config` asks for (moving or stopping it if that
   * changed). Returns why it could not be bound, or null. `claim`: `beside`
   * for a takeover (the running instance serves it too, until it lets go).
   */
  async apply(config: Config, claim: PortClaim): Promise<string | null> {
    this.config = config;
    const wanted = config.server.status;
    const key = wanted ? `${wanted.hostname} ${wanted.port}` : null;
    if (key === this.#address) return null;
    if (!wanted) {
      await this.close();
      return null;
    }
    const previous = this.#endpoint ? { endpoint: this.#endpoint, ...this.#serving! } : null;
    let endpoint: StatusEndpoint;
    try {
      // The new address first, so that a failure keeps the old one serving.
      endpoint = this.#open(wanted, claim);
    } catch (error) {
      // Only the old endpoint's own port can be in its way (127.0.0.1:P becoming 0.0.0.0:P).
      const inTheWay = previous !== null && previous.endpoint.bound.port === wanted.port;
      if (!(error instanceof Deno.errors.AddrInUse) || !inTheWay) {
        return describeBindError(error, wanted.port);
      }
      await this.close();
      try {
        endpoint = this.#open(wanted, claim);
      } catch (again) {
        try {
          // Where it was (the port it got, if it asked for any).
          const back = { ...previous.wanted, port: previous.endpoint.bound.port };
          this.#take(this.#open(back, previous.claim), previous.wanted, previous.claim);
        } catch {
          // Gone meanwhile too: no endpoint until the next reload.
        }
        return describeBindError(again, wanted.port);
      }
    }
    await previous?.endpoint.close();
    this.#take(endpoint, wanted, claim);
    this.log.info(
      "status endpoint on http://{address}/ (/status.json, /metrics, /sessions.json)",
      { address: endpoint.address },
    );
    if (isWildcard(wanted.hostname)) {
      this.log.warn(
        "the status endpoint listens on every address: anyone who reaches it sees your clients; bind it to 127.0.0.1 or a management address",
      );
    }
    return null;
  }

  /** What the endpoint in use was opened with (to open it again). */
  #serving: { wanted: StatusAddress; claim: PortClaim } | null = null;

  #take(endpoint: StatusEndpoint, wanted: StatusAddress, claim: PortClaim): void {
    this.#endpoint = endpoint;
    this.#address = `${wanted.hostname} ${wanted.port}`;
    this.#serving = { wanted, claim };
  }

  #open(wanted: StatusAddress, claim: PortClaim): StatusEndpoint {
    return serveStatus(wanted, {
      answer: this.#answer,
      allowedHosts: () => this.config.server.statusHosts,
      failing: (error) =>
        this.log.error("status endpoint: accept failed: {error}; backing off and retrying", {
          error: describeIoError(error),
        }),
      recovered: (failures) =>
        this.log.warn("status endpoint: accepting again after {failures} failures", {
          failures,
        }),
    }, claim);
  }

  /** Keeps the last reload's result to show; what was rendered before it is stale. */
  reloaded(result: ReloadReport): void {
    this.#lastReload = result;
    this.#cache.clear();
  }

  /** The address and port the endpoint is bound to, or null when it is off. */
  get bound(): { readonly address: string; readonly port: number } | null {
    return this.#endpoint?.bound ?? null;
  }

  /** `ip:port` the endpoint is bound to, or null when it is off. */
  get address(): string | null {
    return this.#endpoint?.address ?? null;
  }

  async close(): Promise<void> {
    const endpoint = this.#endpoint;
    this.#endpoint = null;
    this.#address = null;
    this.#serving = null;
    await endpoint?.close();
  }
}
