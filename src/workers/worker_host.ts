/**
 * What a worker isolate's TCP listeners decide, refuse and open sessions
 * through: the same {@linkcode RelayHost} the main isolate's engine is, with
 * what must be one for all isolates asked of the main isolate (the rules'
 * limits) or reported to it (sessions, refusals, connect results).
 *
 * @module
 */
import type { IpAddress } from "../config/network.ts";
import type { PassRule } from "../config/types.ts";
import { type Decision, hasLimits, matchRule, type Refusal } from "../relay/admission.ts";
import { Bandwidth, epochNow, type SharedBudget } from "../relay/bandwidth.ts";
import { type Dialer, systemDialer } from "../relay/dial.ts";
import { describeIoError } from "../relay/errors.ts";
import {
  type Admitted,
  DEFAULT_TUNING,
  type RefusalPlace,
  type RelayHost,
  type RelayListener,
  type RelayTuning,
} from "../relay/host.ts";
import type { Admission } from "../relay/limits.ts";
import { reachesOwnListener } from "../relay/loop_guard.ts";
import type {
  Closable,
  Direction,
  DisconnectReason,
  DropReason,
  SessionHandle,
} from "../relay/session.ts";
import { Sweeper } from "../relay/sweeper.ts";
import { formatTarget, type ListenerPlan, type Target } from "../rules/plan.ts";
import { type RuleBudgets, TargetBook } from "../relay/target_book.ts";
import type { Outbox } from "./outbox.ts";
import type { BlockReason } from "../relay/session.ts";
import type { TargetStatus } from "../relay/health.ts";

/** A slot the main isolate granted; it releases it when the session's `ended` arrives. */
class RemoteAdmission implements Admission {
  /**
   * @param request the admission question's number
   * @param generation the rule set the session was decided under (a reload may come
   *   between the question and its answer)
   */
  constructor(readonly request: number, readonly generation: number) {}
  release(): void {}
}

/** Rules without limits need no slot. */
const UNLIMITED: Admission = { release() {} };

/** The targets as this worker sees them: health as the main isolate says it. */
export class WorkerTargets extends TargetBook {
  readonly #health = new Map<string, { up: boolean; retryAt: number }>();
  #shared: Record<string, SharedBudget> = {};
  /** Targets this worker reported a failure of since its last reported success. */
  readonly #failing = new Set<string>();
  /** When this worker last reported a success of each target. */
  readonly #saidUp = new Map<string, number>();

  constructor(readonly outbox: Outbox) {
    super();
  }

  protected usable(key: string, now: number): boolean {
    const health = this.#health.get(key);
    return !health || health.up || now >= health.retryAt;
  }

  succeeded(target: Target): void {
    const key = formatTarget(target);
    // A success resets the main isolate's failure count and brings a target back up:
    // say it after this worker's own failures, while the target counts as down, and
    // otherwise once a second (other isolates' failures may be counting meanwhile).
    const failed = this.#failing.delete(key);
    const health = this.#health.get(key);
    const now = performance.now();
    if (!failed && (!health || health.up) && now - (this.#saidUp.get(key) ?? -Infinity) < 1_000) {
      return;
    }
    this.#saidUp.set(key, now);
    this.outbox.push({ t: "target", target: key, error: null });
  }

  failed(target: Target, error: string): void {
    const key = formatTarget(target);
    this.#failing.add(key);
    this.outbox.push({ t: "target", target: key, error });
  }

  protected newBudgets(rule: PassRule, rate: number): RuleBudgets {
    const shared = this.#shared[rule.name];
    // The main isolate shares a budget for every rule with a bandwidth; a rule
    // between two reloads may briefly have none, and gets one of its own.
    return shared?.rate === rate
      ? { rate, up: Bandwidth.shared(rate, shared.up), down: Bandwidth.shared(rate, shared.down) }
      : { rate, up: new Bandwidth(rate), down: new Bandwidth(rate) };
  }

  /** The budgets of the rules in force, shared with every isolate. */
  useBudgets(budgets: Record<string, SharedBudget>): void {
    this.#shared = budgets;
    this.forgetBudgets((name, kept) => budgets[name]?.rate === kept.rate);
  }

  /** The main isolate says how a target is. */
  health(status: TargetStatus): void {
    this.#health.set(status.target, {
      up: status.up,
      retryAt: performance.now() + status.retryInMs,
    });
    if (status.up) this.#failing.delete(status.target);
  }
}

/** A worker's view of the daemon. */
export class WorkerHost implements RelayHost {
  readonly dialer: Dialer = systemDialer;
  readonly tuning: RelayTuning;
  readonly sweeper: Sweeper;
  readonly targets: WorkerTargets;
  /** Live sessions by id, to close when the main isolate says so. */
  readonly sessions = new Map<number, Closable>();
  /** `local remote` of this worker's own live connections toward targets. */
  readonly ownConnections = new Set<string>();
  /** Admission questions waiting for the main isolate's answer. */
  readonly #asked = new Map<number, (refused: BlockReason | null) => void>();
  /** Decisions waiting for such an answer (their sessions open once it comes). */
  readonly #deciding = new Set<Promise<unknown>>();
  #nextId = 1;
  #nextRequest = 1;
  /** The rule set in force here (`WorkerRules.generation`). */
  generation = 0;

  constructor(
    readonly outbox: Outbox,
    readonly listeners: () => Iterable<RelayListener>,
    sweepIntervalMs: number,
  ) {
    this.tuning = { ...DEFAULT_TUNING, sweepIntervalMs };
    this.sweeper = new Sweeper(sweepIntervalMs);
    this.targets = new WorkerTargets(outbox);
  }

  decide(
    plan: ListenerPlan,
    client: IpAddress | null,
    local: IpAddress | null = null,
  ): Decision | Promise<Decision> {
    const matched = matchRule(plan, client, local);
    if (!matched.pass) return matched;
    if (!hasLimits(matched.rule)) return { ...matched, admission: UNLIMITED };
    // Limits count every isolate's sessions: the main isolate keeps them.
    const request = this.#nextRequest++;
    const generation = this.generation;
    const answer = new Promise<BlockReason | null>((resolve) => this.#asked.set(request, resolve));
    this.outbox.push({ t: "admit", request, rule: matched.rule.name, client: client!.toString() });
    this.outbox.flush();
    const decision = answer.then((refused): Decision =>
      refused === null
        ? { ...matched, admission: new RemoteAdmission(request, generation) }
        : { pass: false, rule: matched.rule, reason: refused }
    );
    this.#deciding.add(decision);
    decision.finally(() => this.#deciding.delete(decision));
    return decision;
  }

  /**
   * Resolves once every decision under way now has been acted on (its session
   * opened and reported, or its client refused): a reload's answer waits for
   * them, so that the main isolate has heard of every session of the old rules.
   */
  async decided(): Promise<void> {
    // The listener's reaction to a decision was registered before this one: it runs first.
    await Promise.allSettled([...this.#deciding]);
  }

  /** The main isolate's answer to admission question `request`. */
  admitted(request: number, refused: BlockReason | null): void {
    const resolve = this.#asked.get(request);
    this.#asked.delete(request);
    resolve?.(refused);
  }

  isOwnConnection(client: string, listen: string): boolean {
    return this.ownConnections.has(`${client} ${listen}`);
  }

  isOwnListener(remote: Deno.NetAddr, local: Deno.NetAddr): boolean {
    return reachesOwnListener(this.listeners(), remote, local);
  }

  refuse(listenerKey: string, refusal: Refusal, place: RefusalPlace): void {
    this.outbox.push({
      t: "refuse",
      listenerKey,
      rule: refusal.rule?.name ?? null,
      reason: refusal.reason,
      place,
    });
  }

  open(admitted: Admitted, session: Closable): SessionHandle {
    const id = this.#nextId++;
    this.sessions.set(id, session);
    this.outbox.push({
      t: "open",
      id,
      setup: admitted.setup,
      rule: admitted.rule.name,
      admission: admitted.admission instanceof RemoteAdmission ? admitted.admission.request : null,
      at: epochNow(),
      generation: admitted.admission instanceof RemoteAdmission
        ? admitted.admission.generation
        : this.generation,
    });
    return new WorkerHandle(this, id, admitted.rule);
  }

  listenerFailing(listenerKey: string, verb: "accept" | "receive", error: unknown): void {
    this.outbox.push({
      t: "listener",
      key: listenerKey,
      verb,
      error: describeIoError(error),
      failures: 0,
    });
  }

  listenerRecovered(listenerKey: string, verb: "accept" | "receive", failures: number): void {
    this.outbox.push({ t: "listener", key: listenerKey, verb, error: null, failures });
  }
}

/** A session's reports, sent to the main isolate that accounts for it. */
class WorkerHandle implements SessionHandle {
  #connection: string | null = null;
  #target: string | null = null;
  readonly #eachRead: boolean;

  constructor(readonly host: WorkerHost, readonly id: number, rule: PassRule) {
    this.#eachRead = rule.log.has("data");
  }

  connected(ends: { target: string; local: string; remote: string }): void {
    this.#connection = `${ends.local} ${ends.remote}`;
    this.host.ownConnections.add(this.#connection);
    this.#target = ends.target;
    this.host.targets.joined(ends.target);
    this.host.outbox.push({ t: "connected", id: this.id, ...ends });
  }

  attemptFailed(target: string, error: string): void {
    this.host.outbox.push({ t: "attempt", id: this.id, target, error });
  }

  delivered(direction: Direction, bytes: number): void {
    const up = direction === "up" ? bytes : 0;
    this.host.outbox.bytes(this.id, up, bytes - up, this.#eachRead);
  }

  error(message: string): void {
    this.host.outbox.push({ t: "error", id: this.id, message });
  }

  dropped(_reason: DropReason, message?: string): void {
    // UDP only, and workers serve TCP.
    if (message !== undefined) this.error(message);
  }

  ended(reason: DisconnectReason, error?: string): void {
    if (this.#connection !== null) this.host.ownConnections.delete(this.#connection);
    if (this.#target !== null) this.host.targets.left(this.#target);
    this.host.sessions.delete(this.id);
    this.host.outbox.push({
      t: "ended",
      id: this.id,
      reason,
      ...(error !== undefined ? { error } : {}),
    });
  }
}
