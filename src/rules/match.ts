/**
 * First-match rule selection: the rules naming a listener are tried in file
 * order and the first whose `from` contains the client decides. No match means
 * blocked (deny by default). Pure.
 *
 * @module
 */
import { contains, type IpAddress } from "../config/network.ts";
import type { Binding } from "./plan.ts";

/**
 * The binding that decides `client`, or undefined when no rule matches it.
 * `local` is the address the client reached: on a wildcard socket that
 * serves several listen addresses, only the rules of that address apply.
 */
export function firstMatch(
  bindings: readonly Binding[],
  client: IpAddress,
  local: IpAddress | null = null,
): Binding | undefined {
  return bindings.find((binding) =>
    answersFor(binding.only, local) && binding.rule.from.some((net) => contains(net, client))
  );
}

function answersFor(only: string | null, local: IpAddress | null): boolean {
  if (only === null) return true;
  if (local === null) return false;
  if (only === "0.0.0.0") return local.kind() === "ipv4";
  return local.toString() === only;
}
