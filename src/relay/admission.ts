/**
 * Deciding a new session, the same way for TCP and UDP: first matching rule,
 * then the rule's limits. Refusals are counted and logged here too.
 *
 * @module
 */
import type { IpAddress } from "../config/network.ts";
import type { PassRule, Protocol, Rule } from "../config/types.ts";
import type { BlockReason } from "../log/events.ts";
import { firstMatch } from "../rules/match.ts";
import type { ListenerPlan, Target } from "../rules/plan.ts";
import { countBlock } from "../status/stats.ts";
import { logEvent, type RelayContext } from "./context.ts";
import type { Admission } from "./limits.ts";

/** What happens to a new client. */
export type Decision =
  | {
    readonly pass: true;
    readonly rule: PassRule;
    readonly target: Target;
    readonly admission: Admission;
  }
  | { readonly pass: false; readonly rule: Rule | null; readonly reason: BlockReason };

/** Decides a new session from `client` on `plan`'s listener. */
export function decide(
  context: RelayContext,
  plan: ListenerPlan,
  client: IpAddress | null,
  now: number,
): Decision {
  const binding = client ? firstMatch(plan.bindings, client) : undefined;
  if (!binding) return { pass: false, rule: null, reason: "no-matching-rule" };
  const { rule, target } = binding;
  if (rule.action === "block" || target === null) return { pass: false, rule, reason: "rule" };
  const admission = context.limiter(rule).admit(client!.toString(), now);
  if ("refused" in admission) return { pass: false, rule, reason: admission.refused };
  return { pass: true, rule, target, admission };
}

/** Counts a refusal and, when `log` is true, logs its `block` event. */
export function recordRefusal(
  context: RelayContext,
  listenerKey: string,
  refusal: { readonly rule: Rule | null; readonly reason: BlockReason },
  where: { readonly protocol: Protocol; readonly client: string; readonly listen: string },
  log = true,
): void {
  countBlock(context.stats.of(refusal.rule?.name ?? null, listenerKey), refusal.reason);
  if (!log) return;
  logEvent(context.log, {
    event: "block",
    action: "block",
    rule: refusal.rule?.name ?? null,
    protocol: where.protocol,
    client: where.client,
    listen: where.listen,
    reason: refusal.reason,
  }, refusal.rule);
}
