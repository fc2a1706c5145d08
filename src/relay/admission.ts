/**
 * Deciding a new session, the same way for TCP and UDP: the first rule of the
 * listener whose `from` contains the client, then that rule's limits. Pure:
 * the limiters and the clock are passed in.
 *
 * @module
 */
import type { IpAddress } from "../config/network.ts";
import type { PassRule, Rule } from "../config/types.ts";
import { firstMatch } from "../rules/match.ts";
import type { ListenerPlan, SourcePlan, Target } from "../rules/plan.ts";
import type { Admission, RuleLimiter } from "./limits.ts";
import type { BlockReason } from "./session.ts";

/** A refused client: by which rule (null: none matched) and why. */
export interface Refusal {
  readonly pass: false;
  readonly rule: Rule | null;
  readonly reason: BlockReason;
}

/** A connection from portbounce itself: its own outgoing connection came back to a listener. */
export const LOOP: Refusal = { pass: false, rule: null, reason: "loop" };

/** What happens to a new client: its match, with the slot its rule's limits granted. */
export type Decision =
  | (Extract<Match, { pass: true }> & { readonly admission: Admission })
  | Refusal;

/**
 * Decides a new session from `client` (which reached `local`) on `plan`'s
 * listener at `now` (monotonic ms). `limiterOf` gives each rule's limiter.
 */
export function decide(
  plan: ListenerPlan,
  client: IpAddress | null,
  limiterOf: (rule: Rule) => RuleLimiter,
  now: number,
  local: IpAddress | null = null,
): Decision {
  const matched = matchRule(plan, client, local);
  if (!matched.pass) return matched;
  const admission = limiterOf(matched.rule).admit(client!.toString(), now);
  if ("refused" in admission) return { pass: false, rule: matched.rule, reason: admission.refused };
  return { ...matched, admission };
}

/** The pass rule that takes a client, before its limits are asked; or why none does. */
export type Match =
  | {
    readonly pass: true;
    readonly rule: PassRule;
    readonly targets: readonly Target[];
    readonly source: SourcePlan | null;
  }
  | Refusal;

/** The first rule of the listener for `client` (which reached `local`): pass, or refused. */
export function matchRule(
  plan: ListenerPlan,
  client: IpAddress | null,
  local: IpAddress | null = null,
): Match {
  const binding = client ? firstMatch(plan.bindings, client, local) : undefined;
  if (!binding) return { pass: false, rule: null, reason: "no-matching-rule" };
  const { rule, targets, source } = binding;
  if (rule.action === "block" || targets.length === 0) return { pass: false, rule, reason: "rule" };
  return { pass: true, rule, targets, source };
}

/** Whether a rule has limits to ask before a session starts. */
export function hasLimits(rule: PassRule): boolean {
  return rule.maxSessions > 0 || rule.maxSessionsPerClient > 0 || rule.throttle !== null;
}
