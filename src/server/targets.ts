/**
 * The targets of the rules in force: their health (passive from sessions'
 * connects, active from `health_check`), live session counts for
 * `least-sessions`, round-robin counters, and each rule's bandwidth budgets.
 * Health is kept by target address, so a reload keeps it for targets that
 * stay; budgets are kept by rule name while the rate stays.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { HealthCheck, PassRule, Rule } from "../config/types.ts";
import { Bandwidth, type SharedBudget } from "../relay/bandwidth.ts";
import type { Dialer } from "../relay/dial.ts";
import { describeConnectError } from "../relay/errors.ts";
import { TargetHealth, type TargetStatus } from "../relay/health.ts";
import { TargetBook } from "../relay/target_book.ts";
import { formatTarget, type ListenerPlan, type SourcePlan, type Target } from "../rules/plan.ts";

/** One target's state, as the status shows it. */
export interface TargetState {
  readonly target: string;
  readonly up: boolean;
  /** Wall-clock time of the last change (epoch ms). */
  readonly since: number;
  readonly failures: number;
  readonly lastError: string | null;
  readonly sessions: number;
  /** Whether active checks run for it. */
  readonly checked: boolean;
}

interface Checker {
  readonly timer: ReturnType<typeof setInterval>;
  readonly check: HealthCheck;
}

type Budgets = { rate: number; up: Bandwidth; down: Bandwidth; shared: SharedBudget | null };

/** The engine's targets: health kept here, from sessions' connects and active checks. */
export class TargetRegistry extends TargetBook<Budgets> {
  readonly #health = new Map<string, TargetHealth>();
  readonly #checkers = new Map<string, Checker>();
  readonly #watchers: ((status: TargetStatus) => void)[] = [];

  /**
   * @param shareBudgets keep bandwidth budgets in shared memory, for worker isolates
   */
  constructor(readonly log: Logger, readonly dialer: Dialer, readonly shareBudgets = false) {
    super();
  }

  #stateOf(key: string): TargetHealth {
    let state = this.#health.get(key);
    if (!state) this.#health.set(key, state = new TargetHealth());
    return state;
  }

  protected usable(key: string, now: number): boolean {
    return this.#stateOf(key).usable(now);
  }

  /** Calls `watcher` whenever a target goes up or down, or its back-off changes. */
  watch(watcher: (status: TargetStatus) => void): void {
    this.#watchers.push(watcher);
  }

  /** How every target is now, as workers need to know it. */
  statuses(): TargetStatus[] {
    return [...this.#health.keys()].map((key) => this.#status(key));
  }

  #status(key: string): TargetStatus {
    const state = this.#stateOf(key);
    return {
      target: key,
      up: state.up,
      retryInMs: state.up ? 0 : Math.max(0, state.retryAt - performance.now()),
    };
  }

  #changed(key: string): void {
    if (this.#watchers.length === 0) return;
    const status = this.#status(key);
    for (const watcher of this.#watchers) watcher(status);
  }

  /** A worker's session connected to target `key` (`error` null) or failed to. */
  reported(key: string, error: string | null): void {
    if (!this.#health.has(key)) return; // Not a target of the rules in force (any more).
    if (error === null) this.#succeededAt(key, 1);
    else this.#failedAt(key, error);
  }

  succeeded(target: Target, rise = 1): void {
    this.#succeededAt(formatTarget(target), rise);
  }

  #succeededAt(key: string, rise: number): void {
    if (this.#stateOf(key).succeeded(rise)) {
      this.log.info("target {target} is up again", { target: key });
      this.#changed(key);
    }
  }

  failed(target: Target, error: string, fall?: number): void {
    this.#failedAt(formatTarget(target), error, fall);
  }

  #failedAt(key: string, error: string, fall?: number): void {
    const state = this.#stateOf(key);
    if (state.failed(error, performance.now(), fall)) {
      this.log.warn("target {target} is down after {failures} failed connects: {error}", {
        target: key,
        failures: state.failures,
        error,
      });
    }
    if (!state.up) this.#changed(key); // Down: each failure moves the back-off.
  }

  protected newBudgets(_rule: PassRule, rate: number): Budgets {
    if (!this.shareBudgets) {
      return { rate, up: new Bandwidth(rate), down: new Bandwidth(rate), shared: null };
    }
    const shared = { rate, up: new SharedArrayBuffer(8), down: new SharedArrayBuffer(8) };
    return {
      rate,
      up: Bandwidth.shared(rate, shared.up),
      down: Bandwidth.shared(rate, shared.down),
      shared,
    };
  }

  /** The shared budgets of the rules in force, by rule name (workers take from them too). */
  sharedBudgets(rules: readonly Rule[]): Record<string, SharedBudget> {
    const budgets: Record<string, SharedBudget> = {};
    for (const rule of rules) {
      if (rule.action !== "pass" || rule.bandwidth === null) continue;
      const shared = this.bandwidth(rule)?.shared;
      if (shared) budgets[rule.name] = shared;
    }
    return budgets;
  }

  /**
   * The rules in force changed: forget targets and budgets nobody uses any
   * more, and run active checks for the targets of rules that ask for them.
   */
  apply(rules: readonly Rule[], listeners: readonly ListenerPlan[]): void {
    const wanted = new Map<
      string,
      { target: Target; check: HealthCheck; source: SourcePlan | null }
    >();
    const used = new Set<string>();
    for (const listener of listeners) {
      for (const { rule, targets, source } of listener.bindings) {
        for (const target of targets) {
          const key = formatTarget(target);
          used.add(key);
          this.#stateOf(key);
          if (rule.action === "pass" && rule.healthCheck && !wanted.has(key)) {
            wanted.set(key, { target, check: rule.healthCheck, source });
          }
        }
      }
    }
    for (const key of this.#health.keys()) if (!used.has(key)) this.#health.delete(key);
    const names = new Set(rules.map((r) => r.name));
    this.forgetBudgets((name) => names.has(name));
    for (const [key, checker] of this.#checkers) {
      const want = wanted.get(key);
      if (!want || JSON.stringify(want.check) !== JSON.stringify(checker.check)) {
        clearInterval(checker.timer);
        this.#checkers.delete(key);
      }
    }
    for (const [key, { target, check, source }] of wanted) {
      if (this.#checkers.has(key)) continue;
      const timer = setInterval(() => this.#check(target, check, source), check.intervalMs);
      Deno.unrefTimer(timer);
      this.#checkers.set(key, { timer, check });
      this.#check(target, check, source);
    }
  }

  /** One active check: a TCP connect within the check's timeout. */
  async #check(target: Target, check: HealthCheck, source: SourcePlan | null): Promise<void> {
    try {
      const conn = await this.dialer.tcp(target, check.timeoutMs, new AbortController(), source);
      conn.close();
      this.succeeded(target, check.rise);
    } catch (error) {
      this.failed(target, describeConnectError(error), check.fall);
    }
  }

  /** Stops every active check. */
  stop(): void {
    for (const checker of this.#checkers.values()) clearInterval(checker.timer);
    this.#checkers.clear();
  }

  /** Every target's state now. */
  states(): Map<string, TargetState> {
    return new Map([...this.#health].map(([target, h]) => [target, {
      target,
      up: h.up,
      since: h.since,
      failures: h.failures,
      lastError: h.lastError,
      sessions: this.sessionsOn(target),
      checked: this.#checkers.has(target),
    }]));
  }
}
