/**
 * What a reload changes: listeners added, kept and removed (by protocol,
 * address and port), rules added, changed, removed and unchanged (by name).
 * Pure, so every case is tested without sockets.
 *
 * @module
 */
import type { Rule } from "../config/types.ts";
import type { ListenerPlan } from "./plan.ts";
import { runSteps, type Steps } from "../config/work_steps.ts";

/** Listener keys by fate. */
export interface ListenerDiff {
  readonly added: readonly ListenerPlan[];
  /** New plans for listeners that stay bound. */
  readonly kept: readonly ListenerPlan[];
  readonly removed: readonly string[];
}

/** Rule names by fate. */
export interface RuleDiff {
  readonly added: readonly string[];
  readonly changed: readonly string[];
  readonly removed: readonly string[];
  readonly unchanged: readonly string[];
}

/** Compares listener plans by key. */
export function diffListeners(
  current: Iterable<string>,
  next: readonly ListenerPlan[],
): ListenerDiff {
  const currentKeys = new Set(current);
  const nextKeys = new Set(next.map((plan) => plan.key));
  return {
    added: next.filter((plan) => !currentKeys.has(plan.key)),
    kept: next.filter((plan) => currentKeys.has(plan.key)),
    removed: [...currentKeys].filter((key) => !nextKeys.has(key)),
  };
}

/** Compares rules by name; a rule is changed if anything but its position differs. */
export function diffRules(current: readonly Rule[], next: readonly Rule[]): RuleDiff {
  return runSteps(diffRulesSteps(current, next));
}

/**
 * {@linkcode diffRules} in steps (a fingerprint of 10,000 rules takes a
 * while). The same rule object is unchanged without a fingerprint (a reload
 * of an unchanged file keeps its rules); `printOf` may keep the prints it
 * makes for the next comparison.
 */
export function* diffRulesSteps(
  current: readonly Rule[],
  next: readonly Rule[],
  printOf: (rule: Rule) => string = fingerprint,
): Steps<RuleDiff> {
  const before = new Map(current.map((rule) => [rule.name, rule]));
  const afterNames = new Set<string>();
  const added: string[] = [];
  const changed: string[] = [];
  const unchanged: string[] = [];
  for (const [i, rule] of next.entries()) {
    if (i % 64 === 63) yield;
    afterNames.add(rule.name);
    const old = before.get(rule.name);
    if (old === undefined) added.push(rule.name);
    else if (old === rule || printOf(old) === printOf(rule)) unchanged.push(rule.name);
    else changed.push(rule.name);
  }
  const removed = [...before.keys()].filter((name) => !afterNames.has(name));
  return { added, changed, removed, unchanged };
}

/** A canonical text of everything a rule does (its position in the file aside). */
export function fingerprint(rule: Rule): string {
  const { index: _index, lines: _lines, log, from, ...rest } = rule;
  return JSON.stringify({
    ...rest,
    log: [...log].sort(),
    from: from.map((network) => network.text),
  });
}
