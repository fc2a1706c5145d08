/**
 * The relay engine: the listeners of the rules in force, bound all or none,
 * kept, added and removed by reloads, drained on shutdown. It is the
 * {@linkcode RelayHost} its listeners decide, refuse and open sessions through.
 *
 * @module
 */
import { countOf } from "../config/describe.ts";
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import { type IpAddress, parseClientAddress } from "../config/network.ts";
import type { ClientNames as ClientNamesMode, Rule } from "../config/types.ts";
import { logSessionEvent } from "../log/events.ts";
import { decide, type Decision, type Refusal } from "../relay/admission.ts";
import { type Dialer, systemDialer } from "../relay/dial.ts";
import { describeBindError, describeIoError } from "../relay/errors.ts";
import {
  type Admitted,
  DEFAULT_TUNING,
  type RefusalPlace,
  type RelayListener,
  type RelayTuning,
  type SyncRelayHost,
} from "../relay/host.ts";
import { type Admission, RuleLimiter } from "../relay/limits.ts";
import { reachesOwnListener } from "../relay/loop_guard.ts";
import { EventGate } from "../log/rate_limit.ts";
import { Sweeper } from "../relay/sweeper.ts";
import { setLongTimeout, sleep } from "../relay/timers.ts";
import { firstMatch } from "../rules/match.ts";
import type { BlockReason, Closable, SessionHandle } from "../relay/session.ts";
import { listenTcp, type PortClaim } from "../relay/port_claim.ts";
import { TcpRelayListener } from "../relay/tcp/listener.ts";
import { UdpRelayListener } from "../relay/udp/listener.ts";
import { diffListeners, diffRules, type RuleDiff } from "../rules/diff.ts";
import { formatTarget, type ListenerPlan } from "../rules/plan.ts";
import type { ListenerState } from "../status/report.ts";
import { countBlock, Stats } from "../status/stats.ts";
import type { ReverseLookup } from "./client_names.ts";
import { Monitor } from "./monitor.ts";
import { TargetRegistry } from "./targets.ts";
import { SessionTracker, type TrackedSession } from "./tracker.ts";

/**
 * The cure for EMFILE. Deno cannot read the limit without --allow-all (it
 * guards /proc/self), so it is said when it bites rather than at start.
 */
export const OUT_OF_DESCRIPTORS =
  "out of file descriptors: each listener takes one, each TCP session two, each UDP flow one; raise the limit (ulimit -n, or LimitNOFILE= under systemd) or set max_sessions";

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
  /** Sessions of removed listeners or rules, left to drain. */
  readonly draining: number;
  /** Sessions closed because the new rules refuse their client. */
  readonly revoked: number;
}

/** How a reload treats live sessions. */
export interface ReloadPolicy {
  /** How long sessions of removed listeners or rules may go on; 0: until they end. */
  readonly drainMs: number;
  /** Whether sessions whose client the new rules refuse are closed. */
  readonly enforce: boolean;
}

/** What an engine may be given instead of the defaults (tests shorten timings). */
export interface EngineOptions {
  readonly dialer?: Dialer;
  readonly tuning?: RelayTuning;
  /** How much per-minute history to keep (ms; `[server] history`). */
  readonly historyMs?: number;
  /** Clients each rule's ledger keeps (`[server] clients`), and whether they are named. */
  readonly clients?: { readonly capacity: number; readonly names: ClientNamesMode };
  /** How client names are found (tests answer themselves). */
  readonly reverseLookup?: ReverseLookup;
  /** The wall clock for history and alarms (tests move it). */
  readonly clock?: () => number;
  /**
   * Isolates that will accept on the TCP listeners (`[server] workers`): above
   * 1, TCP sockets are bound with SO_REUSEPORT so workers can share them, and
   * bandwidth budgets live in shared memory.
   */
  readonly workers?: number;
  /**
   * Whether TCP listeners are bound so that others of this user can join them
   * (SO_REUSEPORT, see port_claim.ts): with workers, and where a takeover may
   * come (a pid file). Default: with workers only.
   */
  readonly shareable?: boolean;
  /**
   * A takeover: whether the running instance holds `plan`'s protocol and
   * port. Such TCP listeners are bound beside it; a listener that cannot be
   * (UDP, or where ports are not shared) waits for {@linkcode Engine.bindWaiting}.
   */
  readonly heldElsewhere?: (plan: ListenerPlan) => boolean;
}

/** A set of bound listeners with their sessions. */
export class Engine implements SyncRelayHost {
  readonly stats = new Stats();
  readonly sessions: SessionTracker;
  readonly dialer: Dialer;
  readonly tuning: RelayTuning;
  readonly sweeper: Sweeper;
  readonly targets: TargetRegistry;
  readonly monitor: Monitor;
  /** When the engine started (epoch ms). */
  readonly startedAt: number;
  /** Limits by rule name: a reload that changes a rule keeps its live counts. */
  readonly #limiters = new Map<string, RuleLimiter>();
  /** Rate limits for the events clients can cause. */
  readonly gate: EventGate;
  #gateTimer: ReturnType<typeof setInterval> | undefined;
  /** Listeners taking new sessions, by key. */
  readonly #listeners = new Map<string, RelayListener>();
  /** UDP listeners removed by a reload whose flows still drain through them. */
  readonly #retiring = new Map<string, UdpRelayListener>();
  /** Cancels the drain deadlines of sessions left by reloads. */
  readonly #drainTimers = new Set<() => void>();
  /** Names of the rules in force. */
  #ruleNames = new Set<string>();
  /** Rule sets applied so far (0: the first): workers say which one decided a session. */
  #generation = 0;
  /** How the last reload treated live sessions, for sessions a worker reports late. */
  #lastPolicy: ReloadPolicy = { drainMs: 0, enforce: false };
  /**
   * Sessions reported after the last reload returned (by a worker that decided
   * them under the rules before) that it drained or revoked: its summary's share.
   */
  #late = { draining: 0, revoked: 0 };
  /** Removed TCP listeners whose socket is not yet gone (see `#released`). */
  readonly #releasing = new Set<Promise<void>>();
  /** Listeners a reload could not bind, with why. */
  readonly #failed = new Map<string, { plan: ListenerPlan; error: string }>();
  #rules: readonly Rule[];
  /** The rules before the last reload: sessions workers opened under them may still report. */
  #previousRules: readonly Rule[] = [];
  /** Listeners to bind once a running instance lets go of them (a takeover). */
  #waiting: ListenerPlan[] = [];
  #serving = false;
  /** Isolates accepting on the TCP listeners (this one and its workers). */
  readonly #workers: number;
  /** How this instance's own TCP listeners take their ports. */
  readonly #claim: PortClaim;
  /** More to stop when listeners stop accepting (the workers' listeners). */
  readonly #alsoStop: (() => Promise<void>)[] = [];

  private constructor(readonly log: Logger, rules: readonly Rule[], options: EngineOptions) {
    this.#rules = rules;
    this.dialer = options.dialer ?? systemDialer;
    this.tuning = options.tuning ?? DEFAULT_TUNING;
    this.gate = new EventGate(this.tuning.eventWindowMs);
    this.#workers = options.workers ?? 1;
    this.#claim = options.shareable || this.#workers > 1 ? "shareable" : "exclusive";
    this.targets = new TargetRegistry(log, this.dialer, this.#workers > 1);
    this.monitor = new Monitor(
      log,
      this.stats,
      options.historyMs ?? 24 * 3_600_000,
      this.gate,
      options.clock,
    );
    if (options.reverseLookup) this.monitor.lookup = options.reverseLookup;
    this.sessions = new SessionTracker(
      log,
      this.stats,
      this.gate,
      this.targets,
      this.monitor,
      options.clock,
    );
    this.startedAt = (options.clock ?? Date.now)();
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
    const paired = pairPortZero(plan);
    for (const listenerPlan of plan) {
      if (engine.#listeners.has(listenerPlan.key)) continue; // Bound as the partner of another.
      const partner = paired.get(listenerPlan);
      const held = options.heldElsewhere?.(listenerPlan) ?? false;
      const opened = partner
        ? openPair(listenerPlan, partner, engine, engine.#claim)
        : openListener(listenerPlan, engine, held ? "beside" : engine.#claim);
      if ("error" in opened && opened.addrInUse && held) {
        engine.#waiting.push(listenerPlan);
        continue;
      }
      if ("error" in opened) {
        failures.push({ key: listenerPlan.key, error: opened.error });
        continue;
      }
      for (const listener of Array.isArray(opened) ? opened : [opened]) {
        engine.#listeners.set(listener.plan.key, listener);
      }
    }
    if (failures.length > 0) {
      for (const listener of engine.#listeners.values()) listener.stopAccepting();
      return { ok: false, failures };
    }
    engine.targets.apply(rules, plan);
    engine.monitor.apply(
      rules,
      plan.map((p) => p.key),
      options.historyMs ?? 24 * 3_600_000,
      options.clients ?? { capacity: engine.stats.clientCapacity, names: "off" },
    );
    return { ok: true, engine };
  }

  /**
   * Binds the listeners that waited for a running instance to let go of their
   * ports (it has), trying for up to `patienceMs` while it finishes closing
   * them. Returns those that still could not be bound.
   */
  async bindWaiting(patienceMs = 2_000): Promise<BindFailure[]> {
    const deadline = performance.now() + patienceMs;
    // A socket closed with a receive or accept pending lets go of its port a moment later:
    // try every millisecond, since each one is a datagram refused.
    for (;;) {
      const failures: BindFailure[] = [];
      const still: ListenerPlan[] = [];
      for (const plan of this.#waiting) {
        const opened = openListener(plan, this, this.#claim);
        if ("error" in opened) {
          if (opened.addrInUse) still.push(plan);
          else failures.push({ key: plan.key, error: opened.error });
          continue;
        }
        this.#listeners.set(plan.key, opened);
        if (this.#serving) opened.serve();
      }
      this.#waiting = still;
      if (still.length === 0 || performance.now() >= deadline) {
        this.#waiting = [];
        this.#tcpPortSet = null;
        return [
          ...failures,
          ...still.map((plan) => ({
            key: plan.key,
            error: `address already in use (still, ${
              formatDuration(patienceMs)
            } after the running instance let go of it)`,
          })),
        ];
      }
      await sleep(1);
    }
  }

  // --- RelayHost ---

  decide(plan: ListenerPlan, client: IpAddress | null, local: IpAddress | null = null): Decision {
    return decide(plan, client, (rule) => this.#limiter(rule), performance.now(), local);
  }

  /** Asks `rule`'s limits for a worker's new session from `client`. */
  admitRemote(ruleName: string, client: string): Admission | { refused: BlockReason } {
    const rule = this.#rules.find((r) => r.name === ruleName);
    if (!rule || rule.action !== "pass") return { refused: "no-matching-rule" };
    return this.#limiter(rule).admit(client, performance.now());
  }

  /** The rule set in force: 0 at start, one more for each reload. */
  get generation(): number {
    return this.#generation;
  }

  open(admitted: Admitted, session: Closable, startedAt?: number): TrackedSession {
    const tracked = this.sessions.open(admitted, session, startedAt);
    // An accept that completed as a reload closed its listener (or a worker's report of
    // one) opens after the reload chose what drains: drain it as that reload would have.
    if (
      this.#generation > 0 &&
      (!this.#listeners.has(admitted.setup.listenerKey) || !this.#ruleNames.has(admitted.rule.name))
    ) {
      this.#late.draining++;
      this.#drain(tracked, this.#lastPolicy.drainMs);
    }
    return tracked;
  }

  /** Counts a worker's session its rule let in without asking (no limits when decided). */
  holdRemote(rule: Rule, client: string): Admission {
    return this.#limiter(rule).hold(client, performance.now());
  }

  /**
   * Tracks a worker's session. One decided under an earlier rule set (the worker
   * had not applied the reload yet, or its report was under way) is treated as
   * that reload treated live sessions: drained if its listener or rule went (as
   * {@linkcode open} does for every session), revoked if the rules in force
   * refuse its client.
   */
  openRemote(
    admitted: Admitted,
    session: Closable,
    startedAt: number,
    generation: number,
  ): SessionHandle {
    const tracked = this.open(admitted, session, startedAt);
    if (generation >= this.#generation || tracked.draining) return tracked;
    const listener = this.#listeners.get(admitted.setup.listenerKey)?.plan;
    if (listener && this.#lastPolicy.enforce) {
      const client = parseClientAddress(admitted.setup.clientIp);
      const binding = client ? firstMatch(listener.bindings, client) : undefined;
      if (binding?.rule.action !== "pass") {
        this.#late.revoked++;
        tracked.revoked = true;
        session.close("revoked");
      }
    }
    return tracked;
  }

  /**
   * The sessions drained or revoked since the last reload returned, because
   * they were reported late (a worker's, decided under the rules before it):
   * the daemon adds them to that reload's summary once every worker answered.
   */
  takeLate(): { draining: number; revoked: number } {
    const late = this.#late;
    this.#late = { draining: 0, revoked: 0 };
    return late;
  }

  /** The rule of that name in force, or, failing that, before the last reload. */
  ruleNamed(name: string): Rule | null {
    return this.#rules.find((r) => r.name === name) ??
      this.#previousRules.find((r) => r.name === name) ?? null;
  }

  /** Also stops `stop` when the listeners stop accepting (the workers' listeners). */
  alsoStopAccepting(stop: () => Promise<void>): void {
    this.#alsoStop.push(stop);
  }

  isOwnConnection(client: string, listen: string): boolean {
    return this.sessions.isOwnConnection(client, listen);
  }

  isOwnListener(remote: Deno.NetAddr, local: Deno.NetAddr): boolean {
    if (!this.#tcpPorts().has(remote.port)) return false;
    return reachesOwnListener(this.#listeners.values(), remote, local);
  }

  refuse(listenerKey: string, refusal: Refusal, place: RefusalPlace): void {
    const rule = refusal.rule?.name ?? null;
    this.monitor.refused(rule, listenerKey, place.clientIp);
    countBlock(this.stats.of(rule, listenerKey), refusal.reason, place.client);
    if (rule !== null) {
      this.stats.rules.get(rule)?.clients?.refused(
        place.clientIp,
        place.listen,
        this.monitor.now(),
      );
    }
    if (refusal.rule !== null && !refusal.rule.log.has("block")) return;
    const key = `block ${place.protocol} ${rule} ${place.clientIp} ${refusal.reason}`;
    const what = `${place.protocol} blocks of ${place.clientIp} (rule ${
      rule ?? "none"
    }, reason ${refusal.reason})`;
    if (!this.gate.pass(key, what, performance.now())) return;
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

  listenerFailing(listenerKey: string, verb: "accept" | "receive", error: unknown): void {
    const described = describeIoError(error);
    this.log.error("{listener}: {verb} failed: {error}; backing off and retrying{hint}", {
      listener: listenerKey,
      verb,
      error: described,
      hint: /too many open files/i.test(described) ? ` (${OUT_OF_DESCRIPTORS})` : "",
    });
  }

  listenerRecovered(listenerKey: string, verb: "accept" | "receive", failures: number): void {
    this.log.warn("{listener}: {verb}ing again after {failures} failures", {
      listener: listenerKey,
      verb,
      failures,
    });
  }

  /** The ports TCP listeners are bound to; cleared whenever the listeners change. */
  #tcpPortSet: Set<number> | null = null;

  #tcpPorts(): Set<number> {
    return this.#tcpPortSet ??= new Set(
      [...this.#listeners.values()].filter((l) => l.protocol === "tcp").map((l) => l.address.port),
    );
  }

  // --- lifecycle ---

  #limiter(rule: Rule): RuleLimiter {
    let limiter = this.#limiters.get(rule.name);
    if (!limiter) this.#limiters.set(rule.name, limiter = new RuleLimiter(rule));
    return limiter;
  }

  /** Starts accepting on every listener. */
  serve(): void {
    this.#serving = true;
    for (const listener of this.#listeners.values()) listener.serve();
    this.monitor.start();
    this.#gateTimer = setInterval(() => this.#reportSuppressed(), 1_000);
    Deno.unrefTimer(this.#gateTimer);
  }

  /** Logs what the rate limits held back in windows that have ended. */
  #reportSuppressed(): void {
    for (const { what, count } of this.gate.expire(performance.now())) {
      this.log.warn("suppressed {count} more {what} in the last {window}", {
        count,
        what,
        window: formatDuration(this.tuning.eventWindowMs),
      });
    }
  }

  /**
   * Applies a new, valid rule set (see README, "Reloading"):
   * - a listener whose (protocol, address, port) stays keeps its socket and
   *   accept queue and takes the new rules for new sessions;
   * - removed listeners stop accepting before added ones bind, so an address
   *   that changes on the same port moves over (once the old socket is gone),
   *   and the summary resolves once every removed TCP port is free;
   * - a session keeps the rule it matched; with `enforce`, one whose client
   *   the new rules refuse is closed as `revoked`;
   * - sessions whose listener or rule went away drain: TCP for up to
   *   `drainMs` (0: until they end), UDP flows until quiet for a moment.
   */
  async reload(
    rules: readonly Rule[],
    plan: readonly ListenerPlan[],
    policy: ReloadPolicy,
  ): Promise<ReloadSummary> {
    const ruleDiff = diffRules(this.#rules, rules);
    // Limits belong to the rule's name: live sessions still count after a change.
    const names = new Set(rules.map((rule) => rule.name));
    for (const name of this.#limiters.keys()) if (!names.has(name)) this.#limiters.delete(name);
    for (const rule of rules) {
      const limiter = this.#limiters.get(rule.name);
      if (limiter) limiter.limits = rule;
    }
    this.#previousRules = this.#rules;
    this.#ruleNames = names;
    this.#generation++;
    this.#late = { draining: 0, revoked: 0 };
    this.#lastPolicy = policy;
    this.#rules = rules;
    this.targets.apply(rules, plan);

    const diff = diffListeners(this.#listeners.keys(), plan);
    this.#failed.clear();
    for (const next of diff.kept) this.#listeners.get(next.key)!.replacePlan(next);

    const added: string[] = [];
    const deferred: ListenerPlan[] = [];
    const bind = (next: ListenerPlan, retry: boolean): void => {
      const retiring = this.#retiring.get(next.key);
      if (retiring?.revive(next)) {
        this.#retiring.delete(next.key);
        this.#listeners.set(next.key, retiring);
        added.push(next.key);
        return;
      }
      // Retrying after the listeners this reload removed let go: with workers, theirs may
      // still hold the port until they apply the reload too; join them.
      const opened = openListener(next, this, retry && this.#workers > 1 ? "beside" : this.#claim);
      if ("error" in opened) {
        // Maybe a listener being removed holds the port (127.0.0.1:P becoming *:P).
        if (!retry && opened.addrInUse) return void deferred.push(next);
        this.#failed.set(next.key, { plan: next, error: opened.error });
        return;
      }
      this.#listeners.set(next.key, opened);
      opened.serve();
      added.push(next.key);
    };
    for (const next of diff.added) bind(next, false);
    for (const key of diff.removed) {
      const listener = this.#listeners.get(key)!;
      this.#listeners.delete(key);
      listener.stopAccepting();
      if (listener.protocol === "tcp") {
        const closed = listener.closed.then(() => void this.#releasing.delete(closed));
        this.#releasing.add(closed);
      }
      const neededNow = deferred.some((p) =>
        p.protocol === listener.protocol && p.port === listener.address.port
      );
      if (listener instanceof UdpRelayListener && !neededNow) {
        this.#retiring.set(key, listener);
        listener.closed.then(() => {
          if (this.#retiring.get(key) === listener) this.#retiring.delete(key);
        });
      } else if (listener instanceof UdpRelayListener) {
        // Its port is wanted by a new listener: the flows cannot reply any more.
        this.sessions.closeAll("drained", (s) => s.setup.listenerKey === key);
        listener.closeSocket();
      }
    }
    // A closed listener frees its port only once its pending accept is cancelled.
    if (deferred.length > 0) await this.#released();
    for (const next of deferred) bind(next, true);
    this.#tcpPortSet = null;

    const removedKeys = new Set(diff.removed);
    // Sessions this reload sends draining (those of an earlier reload are counted there).
    const draining = this.sessions.list().filter((session) =>
      !session.draining &&
      (removedKeys.has(session.setup.listenerKey) || !names.has(session.rule.name))
    );
    let revoked = 0;
    if (policy.enforce) {
      const kept = new Map(diff.kept.map((p) => [p.key, p]));
      for (const session of this.sessions.list()) {
        const listener = kept.get(session.setup.listenerKey);
        if (!listener || !names.has(session.rule.name) || session.revoked) continue;
        const client = parseClientAddress(session.setup.clientIp);
        const binding = client ? firstMatch(listener.bindings, client) : undefined;
        if (binding?.rule.action === "pass") continue;
        revoked++;
        session.revoked = true;
        session.session.close("revoked");
      }
    }
    for (const session of draining) this.#drain(session, policy.drainMs);
    // The summary says a removed port is free: make it true before it is returned.
    await this.#released();
    // Sessions that opened on what this reload removed while it waited for that.
    const late = this.takeLate();
    return {
      listeners: {
        added,
        kept: diff.kept.map((p) => p.key),
        removed: diff.removed,
        failed: [...this.#failed.values()].map(({ plan, error }) => ({ key: plan.key, error })),
      },
      rules: ruleDiff,
      draining: draining.length + late.draining,
      revoked: revoked + late.revoked,
    };
  }

  /**
   * Resolves once the sockets of removed TCP listeners are closed: closing a
   * listener with a pending accept frees its port only when that accept is
   * cancelled, a turn of the event loop later.
   */
  async #released(): Promise<void> {
    await Promise.all(this.#releasing);
  }

  /** Lets a session of a removed listener or rule go on for `drainMs` (0: until it ends). */
  #drain(session: TrackedSession, drainMs: number): void {
    session.draining = true;
    // UDP flows have no end of stream: they end once quiet, and at the latest
    // when `drainMs` passes, as TCP sessions do.
    session.session.drainWhenQuiet?.(this.tuning.udpDrainGraceMs);
    if (drainMs <= 0 || session.drainDeadline !== null) return;
    session.drainDeadline = Date.now() + drainMs;
    const cancel = setLongTimeout(() => {
      this.#drainTimers.delete(cancel);
      // Ended meanwhile: its id may name another session by now (a restarted worker).
      if (this.sessions.isLive(session)) session.session.close("drained");
    }, drainMs);
    this.#drainTimers.add(cancel);
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

  /** The plans of the listeners in force. */
  listenerPlans(): ListenerPlan[] {
    return [...this.#listeners.values()].map((listener) => listener.plan);
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
  stopAccepting(): Promise<void> {
    const listeners = [...this.#listeners.values()];
    for (const listener of listeners) listener.stopAccepting();
    // UDP sockets may stay open for their flows' replies; only TCP ones must be gone.
    return Promise.all([
      ...listeners.filter((l) => l.protocol === "tcp").map((l) => l.closed),
      ...this.#alsoStop.map((stop) => stop()),
    ]).then(() => {});
  }

  /**
   * Stops accepting and lets go of every port, for a takeover's new instance:
   * UDP sockets close at once and their flows end (`handed-over`: replies
   * would leave through the closed socket; the clients' next datagrams reach
   * the new instance); TCP sessions go on (they drain as on stop). Resolves
   * once the TCP listeners are closed too.
   */
  releasePorts(): Promise<void> {
    const udp = [...this.#listeners.values(), ...this.#retiring.values()].filter((l) =>
      l instanceof UdpRelayListener
    );
    for (const listener of udp) listener.closeSocket();
    this.sessions.closeAll("handed-over", (s) => s.setup.protocol === "udp");
    return this.stopAccepting();
  }

  /**
   * Stops accepting, lets live sessions end by themselves for up to
   * `drainMs` (UDP flows: until quiet for a moment), then closes the rest with
   * reason `shutdown`. Resolves once every session has ended.
   */
  async shutdown(drainMs: number): Promise<void> {
    await this.stopAccepting();
    this.targets.stop();
    this.monitor.stop();
    clearInterval(this.#gateTimer);
    this.#reportSuppressed();
    for (const cancel of this.#drainTimers) cancel();
    this.#drainTimers.clear();
    if (this.sessions.size > 0) {
      this.log.info("stopping: waiting up to {drain} for {sessions} to end", {
        drain: formatDuration(drainMs),
        sessions: countOf(this.sessions.size, "live session"),
      });
      for (const session of this.sessions.list()) {
        session.session.drainWhenQuiet?.(this.tuning.udpDrainGraceMs);
      }
      const timeUp = new AbortController();
      const drained = await Promise.race([
        this.sessions.whenEmpty().then(() => true),
        sleep(drainMs, timeUp.signal).then(() => false),
      ]);
      timeUp.abort();
      if (!drained) this.closeAllSessions();
    }
    await this.sessions.whenEmpty();
  }

  /** Ends every live session now, with reason `shutdown`. */
  closeAllSessions(): void {
    this.sessions.closeAll("shutdown");
  }
}

/**
 * TCP and UDP listeners of one rule on the same address and port 0: the
 * system picks a port for the first, the second takes the same one (a
 * `forward --both 0=...` gives one port for both).
 */
function pairPortZero(plans: readonly ListenerPlan[]): Map<ListenerPlan, ListenerPlan> {
  const pairs = new Map<ListenerPlan, ListenerPlan>();
  const zero = plans.filter((p) => p.port === 0);
  for (const first of zero) {
    if (pairs.has(first)) continue;
    const second = zero.find((p) =>
      p !== first && !pairs.has(p) && p.protocol !== first.protocol &&
      p.address === first.address && p.bindings[0]?.rule === first.bindings[0]?.rule
    );
    if (second) {
      pairs.set(first, second);
      pairs.set(second, first);
    }
  }
  return pairs;
}

/** Binds two port-0 listeners on one port, trying a few ports if the second is taken. */
function openPair(
  first: ListenerPlan,
  second: ListenerPlan,
  host: SyncRelayHost,
  claim: PortClaim,
): RelayListener[] | { error: string; addrInUse: boolean } {
  for (let attempt = 0;; attempt++) {
    const a = openListener(first, host, claim);
    if ("error" in a) return a;
    const b = openListener(second, host, claim, a.address.port);
    if (!("error" in b)) return [a, b];
    a.stopAccepting();
    if (a instanceof UdpRelayListener) a.closeSocket();
    if (!b.addrInUse || attempt === 9) return b;
  }
}

/** Binds one planned listener (on `port` instead of the plan's 0), or says why it cannot be bound. */
function openListener(
  plan: ListenerPlan,
  host: SyncRelayHost,
  claim: PortClaim,
  port = plan.port,
): RelayListener | { error: string; addrInUse: boolean } {
  const open = (hostname: string): RelayListener =>
    plan.protocol === "tcp"
      ? new TcpRelayListener(plan, listenTcp(hostname, port, claim), host)
      : new UdpRelayListener(
        plan,
        Deno.listenDatagram({ hostname, port, transport: "udp" }),
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
        return bindFailure(fallbackError, plan.port);
      }
    }
    return bindFailure(error, plan.port);
  }
}

function bindFailure(error: unknown, port: number): { error: string; addrInUse: boolean } {
  return {
    error: describeBindError(error, port),
    addrInUse: error instanceof Deno.errors.AddrInUse,
  };
}
