/**
 * The relay engine: the listeners of the rules in force, bound all or none,
 * kept, added and removed by reloads, drained on shutdown. It is the
 * {@linkcode RelayHost} its listeners decide, refuse and open sessions through.
 *
 * @module
 */
import { countOf } from "../config/describe.ts";
import { nextTurn, runStepsSliced } from "../config/work_steps.ts";
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { IpAddress } from "../config/network.ts";
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
import { setLongTimeout, within } from "../relay/timers.ts";
import type { BlockReason, Closable, SessionHandle } from "../relay/session.ts";
import { listenTcp, type PortClaim } from "../relay/port_claim.ts";
import { TcpRelayListener } from "../relay/tcp/listener.ts";
import { UdpRelayListener } from "../relay/udp/listener.ts";
import { diffRulesSteps, fingerprint, type RuleDiff } from "../rules/diff.ts";
import { prepareMatching } from "../rules/match.ts";
import { formatTarget, type ListenerPlan } from "../rules/plan.ts";
import type { ListenerState } from "../status/report.ts";
import { countBlock, Stats } from "../status/stats.ts";
import type { ReverseLookup } from "./client_names.ts";
import {
  type ReloadPolicy,
  RuleGenerations,
  type SessionFate,
  sessionFate,
} from "./generations.ts";
import {
  type BindFailure,
  type BindRefusal,
  ListenerSet,
  type OpenMoment,
} from "./listener_set.ts";
import { Monitor } from "./monitor.ts";
import { TargetRegistry } from "./targets.ts";
import { SessionTracker, type TrackedSession } from "./tracker.ts";

/**
 * The cure for EMFILE. Deno cannot read the limit without --allow-all (it
 * guards /proc/self), so it is said when it bites rather than at start.
 */
export const OUT_OF_DESCRIPTORS =
  "out of file descriptors: each listener takes one, each TCP session two, each UDP flow one; raise the limit (ulimit -n, or LimitNOFILE= under systemd) or set max_sessions";

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
  /** The wall clock for history, alarms and drain deadlines (tests move it). */
  readonly clock?: () => number;
  /**
   * The monotonic clock of limits, rate-limited events and waits
   * (`performance.now()`; tests move it instead of sleeping).
   */
  readonly monotonic?: () => number;
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
  /** Monotonic ms: limits, event windows, waits. */
  readonly now: () => number;
  /** Wall-clock ms (epoch): drain deadlines. */
  readonly #wallClock: () => number;
  #gateTimer: ReturnType<typeof setInterval> | undefined;
  /** The listeners of the rules in force. */
  readonly #listeners: ListenerSet;
  /** The rules in force and before, and what the last reload decided of live sessions. */
  readonly #generations: RuleGenerations;
  /** Fingerprints of rules in force, made by the last reload's comparison (see `reload`). */
  #rulePrints = new Map<Rule, string>();
  /** Cancels the drain deadlines of sessions left by reloads. */
  readonly #drainTimers = new Set<() => void>();
  /** Isolates accepting on the TCP listeners (this one and its workers). */
  readonly #workers: number;
  /** How this instance's own TCP listeners take their ports. */
  readonly #claim: PortClaim;
  /** More to stop when listeners stop accepting (the workers' listeners). */
  readonly #alsoStop: (() => Promise<void>)[] = [];

  private constructor(readonly log: Logger, rules: readonly Rule[], options: EngineOptions) {
    this.#generations = new RuleGenerations(rules);
    this.now = options.monotonic ?? (() => performance.now());
    this.#wallClock = options.clock ?? Date.now;
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
      this.now,
    );
    if (options.reverseLookup) this.monitor.lookup = options.reverseLookup;
    this.sessions = new SessionTracker(
      log,
      this.stats,
      this.gate,
      this.targets,
      this.monitor,
      options.clock,
      this.now,
    );
    this.startedAt = this.#wallClock();
    this.sweeper = new Sweeper(this.tuning.sweepIntervalMs);
    this.#listeners = new ListenerSet(
      (plan, moment, port) => openListener(plan, this, this.#claimAt(moment), port),
      (key) => this.sessions.closeAll("drained", (s) => s.setup.listenerKey === key),
    );
  }

  /** How this instance's own listeners take their ports at each moment. */
  #claimAt(moment: OpenMoment): PortClaim {
    // Beside a running instance; or, retrying after the listeners a reload removed let
    // go, beside the workers' listeners, which may hold the port until they apply it too.
    if (moment === "beside" || (moment === "retry" && this.#workers > 1)) return "beside";
    return this.#claim;
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
    prepareMatching(plan);
    const failures = engine.#listeners.bindAll(plan, options.heldElsewhere);
    if (failures.length > 0) return { ok: false, failures };
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
  bindWaiting(patienceMs = 2_000): Promise<BindFailure[]> {
    // A real wait (it sleeps between tries): on the real clock, not a test's.
    return this.#listeners.bindWaiting(patienceMs, () => performance.now());
  }

  // --- RelayHost ---

  decide(plan: ListenerPlan, client: IpAddress | null, local: IpAddress | null = null): Decision {
    return decide(plan, client, (rule) => this.#limiter(rule), this.now(), local);
  }

  /** Asks `rule`'s limits for a worker's new session from `client`. */
  admitRemote(ruleName: string, client: string): Admission | { refused: BlockReason } {
    const rule = this.#generations.rules.find((r) => r.name === ruleName);
    if (!rule || rule.action !== "pass") return { refused: "no-matching-rule" };
    return this.#limiter(rule).admit(client, this.now());
  }

  /** The rule set in force: 0 at start, one more for each reload. */
  get generation(): number {
    return this.#generations.generation;
  }

  open(admitted: Admitted, session: Closable, startedAt?: number): TrackedSession {
    return this.#open(admitted, session, startedAt);
  }

  /** Counts a worker's session its rule let in without asking (no limits when decided). */
  holdRemote(rule: Rule, client: string): Admission {
    return this.#limiter(rule).hold(client, this.now());
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
    return this.#open(admitted, session, startedAt, generation);
  }

  /**
   * Tracks a session. One that opens after a reload but was decided before it
   * (an accept that completed meanwhile, a worker's report) meets that
   * reload's decision here, as the sessions it found did.
   */
  #open(
    admitted: Admitted,
    session: Closable,
    startedAt?: number,
    decidedUnder?: number,
  ): TrackedSession {
    const tracked = this.sessions.open(admitted, session, startedAt);
    const listener = this.#listeners.get(admitted.setup.listenerKey)?.plan;
    this.#carryOut(tracked, this.#generations.opened(tracked, listener, decidedUnder));
    return tracked;
  }

  /** What a reload decided of a session, done. */
  #carryOut(session: TrackedSession, fate: SessionFate): void {
    if (fate === "drains" && !session.draining) {
      this.#drain(session, this.#generations.policy.drainMs);
    }
    if (fate === "revoked" && !session.revoked) {
      session.revoked = true;
      session.session.close("revoked");
    }
  }

  /**
   * The sessions drained or revoked since the last reload returned, because
   * they were reported late (a worker's, decided under the rules before it):
   * the daemon adds them to that reload's summary once every worker answered.
   */
  takeLate(): { draining: number; revoked: number } {
    return this.#generations.takeLate();
  }

  /** The rule of that name in force, or, failing that, before the last reload. */
  ruleNamed(name: string): Rule | null {
    return this.#generations.ruleNamed(name);
  }

  /** Also stops `stop` when the listeners stop accepting (the workers' listeners). */
  alsoStopAccepting(stop: () => Promise<void>): void {
    this.#alsoStop.push(stop);
  }

  isOwnConnection(client: string, listen: string): boolean {
    return this.sessions.isOwnConnection(client, listen);
  }

  isOwnListener(remote: Deno.NetAddr, local: Deno.NetAddr): boolean {
    if (!this.#listeners.tcpPorts().has(remote.port)) return false;
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
    if (!this.gate.pass(key, what, this.now())) return;
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

  // --- lifecycle ---

  #limiter(rule: Rule): RuleLimiter {
    let limiter = this.#limiters.get(rule.name);
    if (!limiter) this.#limiters.set(rule.name, limiter = new RuleLimiter(rule));
    return limiter;
  }

  /** Starts accepting on every listener. */
  serve(): void {
    this.#listeners.serve();
    this.monitor.start();
    this.#gateTimer = setInterval(() => this.#reportSuppressed(), 1_000);
    Deno.unrefTimer(this.#gateTimer);
  }

  /** Logs what the rate limits held back in windows that have ended. */
  #reportSuppressed(): void {
    for (const { what, count } of this.gate.expire(this.now())) {
      this.log.warn("suppressed {count} more {what} in the last {window}", {
        count,
        what,
        window: formatDuration(this.tuning.eventWindowMs),
      });
    }
  }

  /**
   * Applies a new, valid rule set (see docs/operations.md, "Reloading"):
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
    // In slices: nothing is in force yet, and sessions go on meanwhile. The prints of
    // the rules in force were made by the reload before; those made now are kept.
    const known = this.#rulePrints;
    const made = new Map<Rule, string>();
    const printOf = (rule: Rule) => {
      let print = known.get(rule) ?? made.get(rule);
      if (print === undefined) made.set(rule, print = fingerprint(rule));
      return print;
    };
    const ruleDiff = await runStepsSliced(diffRulesSteps(this.#generations.rules, rules, printOf));
    this.#rulePrints = new Map(
      rules.flatMap((rule) => {
        const print = known.get(rule) ?? made.get(rule);
        return print === undefined ? [] : [[rule, print]];
      }),
    );
    // The new plan's indexes are built before anything changes (pure), then relaying has a turn.
    prepareMatching(plan);
    await nextTurn();
    // Limits belong to the rule's name: live sessions still count after a change.
    this.#generations.advance(rules, policy);
    const names = this.#generations.names;
    for (const name of this.#limiters.keys()) if (!names.has(name)) this.#limiters.delete(name);
    for (const rule of rules) {
      const limiter = this.#limiters.get(rule.name);
      if (limiter) limiter.limits = rule;
    }
    this.targets.apply(rules, plan);
    const changes = await this.#listeners.apply(plan);

    // Every live session meets the new rules (those an earlier reload drains stay so).
    const kept = new Map(changes.kept.map((p) => [p.key, p]));
    let draining = 0;
    let revoked = 0;
    for (const session of this.sessions.list()) {
      const listener = kept.get(session.setup.listenerKey);
      const fate = sessionFate(session, names, listener, policy.enforce);
      // A session closed as revoked but not yet ended (a worker's) still drains if its
      // listener or rule goes; none is counted twice.
      if (fate === "drains" && !session.draining) draining++;
      if (fate === "revoked" && !session.revoked) revoked++;
      this.#carryOut(session, fate);
    }
    // Sessions that opened on what this reload removed while it waited for the ports.
    const late = this.takeLate();
    return {
      listeners: {
        added: changes.added,
        kept: changes.kept.map((p) => p.key),
        removed: changes.removed,
        failed: changes.failed,
      },
      rules: ruleDiff,
      draining: draining + late.draining,
      revoked: revoked + late.revoked,
    };
  }

  /** Lets a session of a removed listener or rule go on for `drainMs` (0: until it ends). */
  #drain(session: TrackedSession, drainMs: number): void {
    session.draining = true;
    // UDP flows have no end of stream: they end once quiet, and at the latest
    // when `drainMs` passes, as TCP sessions do.
    session.session.drainWhenQuiet?.(this.tuning.udpDrainGraceMs);
    if (drainMs <= 0 || session.drainDeadline !== null) return;
    session.drainDeadline = this.#wallClock() + drainMs;
    const cancel = setLongTimeout(() => {
      this.#drainTimers.delete(cancel);
      // Ended meanwhile: its id may name another session by now (a restarted worker).
      if (this.sessions.isLive(session)) session.session.close("drained");
    }, drainMs);
    this.#drainTimers.add(cancel);
  }

  /** The rules in force. */
  get rules(): readonly Rule[] {
    return this.#generations.rules;
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
    const failed: ListenerState[] = this.#listeners.failedPlans().map(({ plan, error }) => ({
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
    return Promise.all([
      this.#listeners.stopAccepting(),
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
    this.#listeners.closeUdpSockets();
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
      const drained = await within(
        this.sessions.whenEmpty().then(() => true),
        drainMs,
        () => false,
      );
      if (!drained) this.closeAllSessions();
    }
    await this.sessions.whenEmpty();
  }

  /** Ends every live session now, with reason `shutdown`. */
  closeAllSessions(): void {
    this.sessions.closeAll("shutdown");
  }
}

/** Binds one planned listener (on `port` instead of the plan's 0), or says why it cannot be bound. */
function openListener(
  plan: ListenerPlan,
  host: SyncRelayHost,
  claim: PortClaim,
  port = plan.port,
): RelayListener | BindRefusal {
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

function bindFailure(error: unknown, port: number): BindRefusal {
  return {
    error: describeBindError(error, port),
    addrInUse: error instanceof Deno.errors.AddrInUse,
  };
}
