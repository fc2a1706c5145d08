/**
 * What every isolate keeps alike about targets: live sessions on each (for
 * `least-sessions`), each rule's round-robin turn, and each rule's bandwidth
 * budgets (kept while the rate stays). Only where health comes from differs:
 * the main isolate keeps its own records, a worker hears them from it; each
 * says so by implementing {@linkcode TargetBook.usable} and how a new
 * budget is made.
 *
 * @module
 */
import type { PassRule } from "../config/types.ts";
import { targetOrder } from "./balance.ts";
import type { Bandwidth } from "./bandwidth.ts";
import type { TargetPool } from "./host.ts";
import { formatTarget, type Target } from "../rules/plan.ts";

/** A rule's budgets, one per direction, at the rate they were made for. */
export interface RuleBudgets {
  readonly rate: number;
  readonly up: Bandwidth;
  readonly down: Bandwidth;
}

/** The body of a target pool; its health source is the subclass's. */
export abstract class TargetBook<Budgets extends RuleBudgets = RuleBudgets> implements TargetPool {
  readonly #sessions = new Map<string, number>();
  readonly #rounds = new Map<string, number>();
  readonly #budgets = new Map<string, Budgets>();

  /** Whether sessions may try target `key` now (`now`: `performance.now()`). */
  protected abstract usable(key: string, now: number): boolean;
  /** New budgets for `rule` at `rate`. */
  protected abstract newBudgets(rule: PassRule, rate: number): Budgets;
  abstract succeeded(target: Target): void;
  abstract failed(target: Target, error: string): void;

  order(rule: PassRule, targets: readonly Target[], client: string): Target[] {
    if (targets.length === 1) return [...targets];
    const now = performance.now();
    return targetOrder(targets, rule.balance, {
      usable: (t) => this.usable(formatTarget(t), now),
      sessions: (t) => this.sessionsOn(formatTarget(t)),
      next: () => {
        const n = this.#rounds.get(rule.name) ?? 0;
        this.#rounds.set(rule.name, n + 1);
        return n;
      },
    }, client);
  }

  bandwidth(rule: PassRule): Budgets | null {
    if (rule.bandwidth === null) return null;
    const kept = this.#budgets.get(rule.name);
    if (kept && kept.rate === rule.bandwidth) return kept;
    const fresh = this.newBudgets(rule, rule.bandwidth);
    this.#budgets.set(rule.name, fresh);
    return fresh;
  }

  /** Forgets the budgets of rules `keep` says no to (gone, or their rate changed). */
  protected forgetBudgets(keep: (name: string, budgets: Budgets) => boolean): void {
    for (const [name, budgets] of this.#budgets) {
      if (!keep(name, budgets)) this.#budgets.delete(name);
    }
  }

  /** A session is on target `key` now (until `left`). */
  joined(key: string): void {
    this.#sessions.set(key, this.sessionsOn(key) + 1);
  }

  left(key: string): void {
    const n = this.sessionsOn(key) - 1;
    if (n <= 0) this.#sessions.delete(key);
    else this.#sessions.set(key, n);
  }

  /** Live sessions on target `key`. */
  sessionsOn(key: string): number {
    return this.#sessions.get(key) ?? 0;
  }
}
