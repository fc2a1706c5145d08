/**
 * The relay engine: the listeners of the rules in force, bound all or none,
 * kept, added and removed by reloads, drained on shutdown. It is the
 * {@linkcode RelayHost} its listeners decide, refuse and open sessions through.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { IpAddress } from "../config/network.ts";
import type { Rule } from "../config/types.ts";
import { logSessionEvent } from "../log/events.ts";
import { decide, type Decision, type Refusal } from "../relay/admission.ts";
import { type Dialer, systemDialer } from "../relay/dial.ts";
import { describeBindError, describeIoError } from "../relay/errors.ts";
import {
  type Admitted,
  DEFAULT_TUNING,
  type RefusalPlace,
  type RelayHost,
  type RelayListener,
  type RelayTuning,
} from "../relay/host.ts";
import { RuleLimiter } from "../relay/limits.ts";
import { OncePer } from "../relay/once_per.ts";
import { Sweeper } from "../relay/sweeper.ts";
import type { Closable, SessionHandle } from "../relay/session.ts";
import { TcpRelayListener } from "../relay/tcp/listener.ts";
import { UdpRelayListener } from "../relay/udp/listener.ts";
import { diffListeners, diffRules, type RuleDiff } from "../rules/diff.ts";
import { formatTarget, type ListenerPlan } from "../rules/plan.ts";
import type { ListenerState } from "../status/report.ts";
import { countBlock, Stats } from "../status/stats.ts";
import { SessionTracker } from "./tracker.ts";

/** UDP block events are logged at most once per rule and client in this interval. */
const UDP_BLOCK_LOG_INTERVAL_MS = 60_000;

/** A listener that could not be bound, and why. */
export interface BindFailure {
  readonly key: string;
  readonly error: string;
}

/** An address actually bound, as written to the ready file. */
export interface BoundAddress {
  readonly protocol: "tcp" | "udp";
  /** The planned listener (`tcp 127.0.0.1:0`). */
  readonly key: string;
  readonly address: string;
  readonly port: number;
}

/** What a reload did. */
export interface ReloadSummary {
  readonly listeners: {
    readonly added: readonly string[];
    readonly kept: readonly string[];
    readonly removed: readonly string[];
    readonly failed: readonly BindFailure[];
  };
  readonly rules: RuleDiff;
}

/** What an engine may be given instead of the defaults (tests shorten timings). */
export interface EngineOptions {
  readonly dialer?: Dialer;
  readonly tuning?: RelayTuning;
}

/** A set of bound listeners with their sessions. */
export class Engine implements RelayHost {
  readonly stats = new Stats();
  readonly sessions: SessionTracker;
  readonly dialer: Dialer;
  readonly tuning: RelayTuning;
  readonly sweeper: Sweeper;
  /** When the engine started (epoch ms). */
  readonly startedAt = Date.now();
  readonly #limiters = new WeakMap<Rule, RuleLimiter>();
  readonly #udpBlockLog = new OncePer(UDP_BLOCK_LOG_INTERVAL_MS);
  /** Listeners taking new sessions, by key. */
  readonly #listeners = new Map<string, RelayListener>();
  /** UDP listeners removed by a reload whose flows still drain through them. */
  readonly #retiring = new Map<string, UdpRelayListener>();
  readonly #drainTimers = new Set<ReturnType<typeof setTimeout>>();
  /** Listeners a reload could not bind, with why. */
  readonly #failed = new Map<string, { plan: ListenerPlan; error: string }>();
  #rules: readonly Rule[];

  private constructor(readonly log: Logger, rules: readonly Rule[], options: EngineOptions) {
    this.#rules = rules;
    this.sessions = new SessionTracker(log, this.stats);
    this.dialer = options.dialer ?? systemDialer;
    this.tuning = options.tuning ?? DEFAULT_TUNING;
    this.sweeper = new Sweeper(this.tuning.sweepIntervalMs);
  }

  /**
   * Binds every listener of the plan. If any fails, closes those already bound
   * and returns every failure: nothing is left half-open.
   */
  static bind(
    rules: readonly Rule[],
    plan: readonly ListenerPlan[],
    log: Logger,
    options: EngineOptions = {},
  ): { ok: true; engine: Engine } | { ok: false; failures: BindFailure[] } {
    const engine = new Engine(log, rules, options);
    const failures: BindFailure[] = [];
    for (const listenerPlan of plan) {
      const opened = openListener(listenerPlan, engine);
      if ("error" in opened) failures.push({ key: listenerPlan.key, error: opened.error });
      else engine.#listeners.set(listenerPlan.key, opened);
    }
    if (failures.length > 0) {
      for (const listener of engine.#listeners.values()) listener.stopAccepting();
      return { ok: false, failures };
    }
    return { ok: true, engine };
  }

  // --- RelayHost ---

  decide(plan: ListenerPlan, client: IpAddress | null): Decision {
    return decide(plan, client, (rule) => this.#limiter(rule), performance.now());
  }

  refuse(listenerKey: string, refusal: Refusal, place: RefusalPlace): void {
    countBlock(this.stats.of(refusal.rule?.name ?? null, listenerKey), refusal.reason);
    if (
      place.protocol === "udp" &&
      !this.#udpBlockLog.pass(`${refusal.rule?.name ?? "-"} ${place.clientIp}`, performance.now())
    ) return;
    logSessionEvent(this.log, {
      event: "block",
      action: "block",
      rule: refusal.rule?.name ?? null,
      protocol: place.protocol,
      client: place.client,
      listen: place.listen,
      reason: refusal.reason,
    }, refusal.rule);
  }

  open(admitted: Admitted, session: Closable): SessionHandle {
    return this.sessions.open(admitted, session);
  }

  listenerFailing(listenerKey: string, verb: "accept" | "receive", error: unknown): void {
    this.log.error("{listener}: {verb} failed: {error}; backing off and retrying", {
      listener: listenerKey,
      verb,
      error: describeIoError(error),
    });
  }

  listenerRecovered(listenerKey: string, verb: "accept" | "receive", failures: number): void {
    this.log.warn("{listener}: {verb}ing again after {failures} failures", {
      listener: listenerKey,
      verb,
      failures,
    });
  }

  // --- lifecycle ---

  #limiter(rule: Rule): RuleLimiter {
    let limiter = this.#limiters.get(rule);
    if (!limiter) this.#limiters.set(rule, limiter = new RuleLimiter(rule));
    return limiter;
  }

  /** Starts accepting on every listener. */
  serve(): void {
    for (const listener of this.#listeners.values()) listener.serve();
  }

  /**
   * Applies a new, valid rule set. Listeners whose (protocol, address, port)
   * stays are kept as they are, socket and accept queue included, and take
   * their new rules for new sessions; new ones are bound (a failure is
   * reported and the rest applies); removed ones stop taking sessions, and
   * their live sessions may drain for `drainMs` before closing as `drained`.
   * Sessions keep the rule they matched.
   */
  reload(rules: readonly Rule[], plan: readonly ListenerPlan[], drainMs: number): ReloadSummary {
    const ruleDiff = diffRules(this.#rules, rules);
    // An unchanged rule keeps its limiter: its live sessions still count.
    const oldByName = new Map(this.#rules.map((rule) => [rule.name, rule]));
    for (const name of ruleDiff.unchanged) {
      const limiter = this.#limiters.get(oldByName.get(name)!);
      if (limiter) this.#limiters.set(rules.find((rule) => rule.name === name)!, limiter);
    }
    this.#rules = rules;

    const diff = diffListeners(this.#listeners.keys(), plan);
    this.#failed.clear();
    for (const next of diff.kept) this.#listeners.get(next.key)!.replacePlan(next);
    const failed: BindFailure[] = [];
    const added: string[] = [];
    for (const next of diff.added) {
      const retiring = this.#retiring.get(next.key);
      this.#retiring.delete(next.key);
      if (retiring?.revive(next)) {
        this.#listeners.set(next.key, retiring);
        added.push(next.key);
        continue;
      }
      const opened = openListener(next, this);
      if ("error" in opened) {
        failed.push({ key: next.key, error: opened.error });
        this.#failed.set(next.key, { plan: next, error: opened.error });
        continue;
      }
      this.#listeners.set(next.key, opened);
      opened.serve();
      added.push(next.key);
    }
    for (const key of diff.removed) {
      const listener = this.#listeners.get(key)!;
      this.#listeners.delete(key);
      listener.stopAccepting();
      if (listener instanceof UdpRelayListener) {
        this.#retiring.set(key, listener);
        listener.closed.then(() => {
          if (this.#retiring.get(key) === listener) this.#retiring.delete(key);
        });
      }
      this.#drainLater(key, drainMs);
    }
    return {
      listeners: { added, kept: diff.kept.map((p) => p.key), removed: diff.removed, failed },
      rules: ruleDiff,
    };
  }

  /** After `drainMs`, closes what is left of a removed listener's sessions. */
  #drainLater(key: string, drainMs: number): void {
    const timer = setTimeout(() => {
      this.#drainTimers.delete(timer);
      // A listener re-added meanwhile under the same key keeps its sessions.
      if (this.#listeners.has(key)) return;
      this.sessions.closeAll("drained", (session) => session.setup.listenerKey === key);
    }, drainMs);
    this.#drainTimers.add(timer);
  }

  /** The rules in force. */
  get rules(): readonly Rule[] {
    return this.#rules;
  }

  /** Every listener of the rules in force: bound, or why not. */
  listenerStates(): ListenerState[] {
    const bound: ListenerState[] = [...this.#listeners.values()].map((listener) => ({
      key: listener.plan.key,
      protocol: listener.plan.protocol,
      bound: formatAddress(listener.address.hostname, listener.address.port),
      error: null,
      rules: listener.plan.bindings.map((b) => b.rule.name),
    }));
    const failed: ListenerState[] = [...this.#failed.values()].map(({ plan, error }) => ({
      key: plan.key,
      protocol: plan.protocol,
      bound: null,
      error,
      rules: plan.bindings.map((b) => b.rule.name),
    }));
    return [...bound, ...failed];
  }

  /** Addresses actually bound, in plan order. */
  boundAddresses(): BoundAddress[] {
    return [...this.#listeners.values()].map((listener) => ({
      protocol: listener.plan.protocol,
      key: listener.plan.key,
      address: listener.address.hostname,
      port: listener.address.port,
    }));
  }

  /** One line per listener: `tcp 127.0.0.1:8080 -> 127.0.0.1:80 (web)`. */
  describeListeners(): string[] {
    return [...this.#listeners.values()].map((listener) => {
      const bound = formatAddress(listener.address.hostname, listener.address.port);
      const rules = listener.plan.bindings.map((b) =>
        b.targets.length > 0
          ? `${b.targets.map(formatTarget).join(", ")} (${b.rule.name})`
          : `block (${b.rule.name})`
      );
      return `${listener.plan.protocol} ${bound} -> ${rules.join(", ")}`;
    });
  }

  /** Stops accepting new sessions on every listener. */
  stopAccepting(): void {
    for (const listener of this.#listeners.values()) listener.stopAccepting();
  }

  /**
   * Stops accepting, lets live sessions end by themselves for up to
   * `drainMs`, then closes the rest with reason `shutdown`.
   * Resolves once every session has ended.
   */
  async shutdown(drainMs: number): Promise<void> {
    this.stopAccepting();
    for (const timer of this.#drainTimers) clearTimeout(timer);
    this.#drainTimers.clear();
    if (this.sessions.size > 0) {
      this.log.info("stopping: waiting up to {drain} for {sessions} live sessions to end", {
        drain: formatDuration(drainMs),
        sessions: this.sessions.size,
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = await Promise.race([
        this.sessions.whenEmpty().then(() => true),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), drainMs)),
      ]);
      clearTimeout(timer);
      if (!drained) this.closeAllSessions();
    }
    await this.sessions.whenEmpty();
  }

  /** Ends every live session now, with reason `shutdown`. */
  closeAllSessions(): void {
    this.sessions.closeAll("shutdown");
  }
}

/** Binds one planned listener, or says why it cannot be bound. */
function openListener(plan: ListenerPlan, host: RelayHost): RelayListener | { error: string } {
  const open = (hostname: string): RelayListener =>
    plan.protocol === "tcp"
      ? new TcpRelayListener(plan, Deno.listen({ hostname, port: plan.port }), host)
      : new UdpRelayListener(
        plan,
        Deno.listenDatagram({ hostname, port: plan.port, transport: "udp" }),
        host,
      );
  try {
    return open(plan.address);
  } catch (error) {
    // `*` on a host without IPv6: every IPv4 address is the best there is.
    if (plan.everyAddress && error instanceof Deno.errors.AddrNotAvailable) {
      try {
        return open("0.0.0.0");
      } catch (fallbackError) {
        return { error: describeBindError(fallbackError, plan.port) };
      }
    }
    return { error: describeBindError(error, plan.port) };
  }
}
