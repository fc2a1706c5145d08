/**
 * First-match rule selection: the rules naming a listener are tried in file
 * order and the first whose `from` contains the client decides. No match means
 * blocked (deny by default). Pure.
 *
 * @module
 */
import { contains, type IpAddress } from "../config/network.ts";
import { RuleIndex } from "./index.ts";
import type { Binding } from "./plan.ts";

/** Up to this many rules on a listener, a scan is as quick as the index and builds nothing. */
const SCAN_AT_MOST = 16;

/** Indexes of the listeners' rule lists, built on first use (at plan time: see `indexRules`). */
const indexes = new WeakMap<readonly Binding[], RuleIndex>();

/**
 * The binding that decides `client`, or undefined when no rule matches it.
 * `local` is the address the client reached: on a wildcard socket that
 * serves several listen addresses, only the rules of that address apply.
 * Many rules are looked up in an index (index.ts), a few are scanned.
 */
export function firstMatch(
  bindings: readonly Binding[],
  client: IpAddress,
  local: IpAddress | null = null,
): Binding | undefined {
  if (bindings.length <= SCAN_AT_MOST) return firstMatchLinear(bindings, client, local);
  return indexRules(bindings).firstMatch(client, local);
}

/** The index of a listener's rules: built once per plan, kept as long as the plan is. */
export function indexRules(bindings: readonly Binding[]): RuleIndex {
  let index = indexes.get(bindings);
  if (!index) indexes.set(bindings, index = new RuleIndex(bindings));
  return index;
}

/**
 * Builds the indexes `listeners` will need, so that the first client after a
 * start or reload does not wait for one.
 */
export function prepareMatching(
  listeners: readonly { readonly bindings: readonly Binding[] }[],
): void {
  for (const { bindings } of listeners) if (bindings.length > SCAN_AT_MOST) indexRules(bindings);
}

/** First match by trying each rule in file order: the definition the index must agree with. */
export function firstMatchLinear(
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
