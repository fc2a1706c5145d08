/**
 * First-match rule selection: the rules naming a listener are tried in file
 * order and the first whose `from` contains the client decides. No match means
 * blocked (deny by default). Pure.
 *
 * @module
 */
import { contains, type IpAddress } from "../config/network.ts";
import type { Binding } from "./plan.ts";

/** The binding that decides `client`, or undefined when no rule matches it. */
export function firstMatch(
  bindings: readonly Binding[],
  client: IpAddress,
): Binding | undefined {
  return bindings.find((binding) => binding.rule.from.some((net) => contains(net, client)));
}
