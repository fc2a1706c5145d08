/**
 * The listener plan: which sockets to open and, for each, the rules that
 * decide its clients in file order. One listener exists per (protocol,
 * address, port), shared by every rule that names it. Pure.
 *
 * @module
 */
import type { ListenEndpoint, Protocol } from "../config/endpoint.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { ConfigProblem } from "../config/load.ts";
import { type Config, type Rule, ruleLabel } from "../config/types.ts";

/** Where a pass rule sends one listener's sessions. `host` is an IP or a name resolved per session. */
export interface Target {
  readonly host: string;
  readonly port: number;
}

/** A rule as it applies on one listener. */
export interface Binding {
  readonly rule: Rule;
  /** Where the rule sends this listener's sessions, in order of preference; empty for block rules. */
  readonly targets: readonly Target[];
}

/** One socket to open. */
export interface ListenerPlan {
  /** `tcp 127.0.0.1:80`: the identity used to diff plans on reload. */
  readonly key: string;
  readonly protocol: Protocol;
  /** IP address to bind (`::` for `*`). */
  readonly address: string;
  /** 0 asks the system for a free port. */
  readonly port: number;
  /** True for `*`: bind `::` (both families) or, where IPv6 is off, `0.0.0.0`. */
  readonly everyAddress: boolean;
  /** Rules naming this listener, in file order. */
  readonly bindings: readonly Binding[];
}

/** Addresses found for listen names (interfaces or hosts), or why none were. */
export type ResolvedNames = ReadonlyMap<
  string,
  { addresses: readonly string[] } | { error: string }
>;

/** Every name used in a `listen` value, to resolve before planning. */
export function listenNames(config: Config): string[] {
  const names = new Set<string>();
  for (const rule of config.rules) {
    for (const endpoint of rule.listen) {
      if (endpoint.host.kind === "name") names.add(endpoint.host.name);
    }
  }
  return [...names];
}

/** Formats a target for logs and tables. */
export function formatTarget(target: Target): string {
  return formatAddress(target.host, target.port);
}

/** Builds the listener plan; names that did not resolve are problems. */
export function buildPlan(
  config: Config,
  resolved: ResolvedNames,
): { listeners: ListenerPlan[]; problems: ConfigProblem[] } {
  const listeners = new Map<string, ListenerPlan & { bindings: Binding[] }>();
  const problems: ConfigProblem[] = [];
  for (const rule of config.rules) {
    for (const endpoint of rule.listen) {
      const addresses = addressesOf(endpoint, resolved);
      if ("error" in addresses) {
        problems.push({
          where: config.source,
          message: `${ruleLabel(rule)}: listen: "${endpoint.text}": ${addresses.error}`,
        });
        continue;
      }
      for (const protocol of rule.protocols) {
        for (const address of addresses) {
          for (
            let port = endpoint.ports.first;
            port <= endpoint.ports.last;
            port++
          ) {
            const key = `${protocol} ${formatAddress(address, port)}`;
            let listener = listeners.get(key);
            if (!listener) {
              listener = {
                key,
                protocol,
                address,
                port,
                everyAddress: endpoint.host.kind === "any",
                bindings: [],
              };
              listeners.set(key, listener);
            }
            if (listener.bindings.some((b) => b.rule === rule)) continue;
            listener.bindings.push({ rule, targets: targetsFor(rule, endpoint, port) });
          }
        }
      }
    }
  }
  return { listeners: [...listeners.values()], problems };
}

function addressesOf(
  endpoint: ListenEndpoint,
  resolved: ResolvedNames,
): readonly string[] | { error: string } {
  switch (endpoint.host.kind) {
    case "ip":
      return [endpoint.host.address];
    case "any":
      return ["::"];
    case "name": {
      const found = resolved.get(endpoint.host.name);
      if (!found) return { error: `"${endpoint.host.name}" was not resolved` };
      if ("error" in found) return found;
      if (found.addresses.length === 0) {
        return { error: `"${endpoint.host.name}" has no addresses` };
      }
      return found.addresses;
    }
  }
}

function targetsFor(rule: Rule, endpoint: ListenEndpoint, port: number): Target[] {
  if (rule.action === "block") return [];
  const { host, ports } = rule.bounceTo;
  const hostText = host.kind === "ip" ? host.address : host.name;
  if (ports === null) return [{ host: hostText, port }];
  if (ports.first === ports.last) return [{ host: hostText, port: ports.first }];
  return [{ host: hostText, port: ports.first + (port - endpoint.ports.first) }];
}
