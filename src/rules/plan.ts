/**
 * The listener plan: which sockets to open and, for each, the rules that
 * decide its clients in file order. One listener exists per (protocol,
 * address, port), shared by every rule that names it. A TCP wildcard
 * (`*:22`, `0.0.0.0:22`) takes in the specific addresses on its port
 * (`203.0.113.10:22`): Linux cannot bind both, so one socket serves them and
 * each binding says which local address it answers for. Overlapping UDP
 * listeners cannot be served right (a reply must leave from the address the
 * client used) and are a problem; so is a rule that bounces to itself. Pure.
 *
 * @module
 */
import { runSteps, type Steps } from "../config/work_steps.ts";
import type { ListenEndpoint, Protocol } from "../config/endpoint.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { ConfigProblem } from "../config/load.ts";
import { parseIp } from "../config/network.ts";
import { type Config, type Rule, ruleLabel, ruleWhere, targetsText } from "../config/types.ts";

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
  /**
   * The local address the rule listens on when a wildcard socket serves it
   * (`0.0.0.0`: every IPv4 address); null when it takes every address the socket does.
   */
  readonly only: string | null;
  /** Where the rule's outgoing traffic leaves from, per family; null: the system picks. */
  readonly source: SourcePlan | null;
}

/** A rule's source address, resolved: one per address family (an interface may have both). */
export interface SourcePlan {
  readonly v4: string | null;
  readonly v6: string | null;
  /** As written (`eth1`, `203.0.113.5`). */
  readonly text: string;
}

/** What this host has, for planning: its addresses and its interfaces' addresses. */
export interface HostFacts {
  /** Canonical addresses of this host (loopback is always local as well). */
  readonly localAddresses: ReadonlySet<string>;
  /** Addresses per interface name. */
  readonly interfaces: ReadonlyMap<string, readonly string[]>;
}

/** How a plan is made. */
export interface PlanOptions {
  /**
   * `elsewhere`: the rules are for another machine (`export`), so an interface
   * named as `source` is not looked up here and sources are left out of the plan.
   */
  readonly sourceInterfaces?: "here" | "elsewhere";
}

const NO_FACTS: HostFacts = { localAddresses: new Set(), interfaces: new Map() };

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

/**
 * Builds the listener plan. Names that did not resolve, overlapping UDP
 * listeners and rules bouncing to their own listen address are problems.
 * `localAddresses` are this host's addresses (loopback is always local).
 */
export function buildPlan(
  config: Config,
  resolved: ResolvedNames,
  host: HostFacts = NO_FACTS,
  options: PlanOptions = {},
): Plan {
  return runSteps(buildPlanSteps(config, resolved, host, options));
}

/** A listener plan, or what is wrong with the rules for one. */
export interface Plan {
  readonly listeners: ListenerPlan[];
  readonly problems: ConfigProblem[];
}

/** {@linkcode buildPlan} in steps (see `work_steps.ts`). */
export function* buildPlanSteps(
  config: Config,
  resolved: ResolvedNames,
  host: HostFacts = NO_FACTS,
  options: PlanOptions = {},
): Steps<Plan> {
  const listeners = new Map<string, ListenerPlan & { bindings: Binding[] }>();
  const problems: ConfigProblem[] = [];
  for (const [i, rule] of config.rules.entries()) {
    if (i % 256 === 255) yield;
    const source = options.sourceInterfaces === "elsewhere"
      ? null
      : sourceOf(rule, host, config.source, problems);
    for (const endpoint of rule.listen) {
      const addresses = addressesOf(endpoint, resolved);
      if ("error" in addresses) {
        problems.push({
          where: ruleWhere(config.source, rule, "listen"),
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
            // A rule naming one listener twice binds once. Its bindings are pushed while it is
            // planned, so an earlier one of this listener is the last one (no scan of them all).
            if (listener.bindings.at(-1)?.rule === rule) continue;
            listener.bindings.push({
              rule,
              targets: targetsFor(rule, endpoint, port),
              only: null,
              source,
            });
          }
        }
      }
    }
  }
  const merged = mergeWildcards([...listeners.values()], config.source, problems);
  const looping = new Set<Rule>();
  for (const listener of merged) findSelfBounces(listener, host.localAddresses, looping);
  for (const { rule, message } of [...looping].map((rule) => loopProblem(rule, merged))) {
    problems.push({ where: ruleWhere(config.source, rule, "bounce_to"), message });
  }
  return { listeners: merged, problems };
}

function isWildcardAddress(address: string): boolean {
  return address === "::" || address === "0.0.0.0";
}

/** Whether a socket bound to `wildcard` also receives what arrives at `address`. */
function covers(wildcard: string, address: string): boolean {
  return wildcard === "::" || !address.includes(":");
}

/**
 * Folds listeners on a port that a wildcard socket of the same port covers
 * into it (TCP), or reports them (UDP).
 */
function mergeWildcards(
  listeners: (ListenerPlan & { bindings: Binding[] })[],
  source: string,
  problems: ConfigProblem[],
): ListenerPlan[] {
  const gone = new Set<ListenerPlan>();
  const byPort = Map.groupBy(
    listeners.filter((l) => l.port !== 0),
    (l) => `${l.protocol} ${l.port}`,
  );
  for (const group of byPort.values()) {
    const wildcard = group.find((l) => l.address === "::") ??
      group.find((l) => l.address === "0.0.0.0");
    if (!wildcard) continue;
    const covered = group.filter((l) => l !== wildcard && covers(wildcard.address, l.address));
    if (covered.length === 0) continue;
    if (wildcard.protocol === "udp") {
      for (const other of covered) {
        const [a, b] = [wildcard.bindings[0].rule, other.bindings[0].rule];
        problems.push({
          where: ruleWhere(source, b, "listen"),
          message: `${ruleLabel(b)}: listen: udp ${
            formatAddress(other.address, other.port)
          } overlaps udp ${formatAddress(wildcard.address, wildcard.port)} of ${
            ruleLabel(a)
          }: one UDP socket cannot serve both (a reply must leave from the address the client used); listen on one or the other`,
        });
      }
      continue;
    }
    for (const other of covered) {
      gone.add(other);
      for (const binding of other.bindings) {
        wildcard.bindings.push({ ...binding, only: binding.only ?? other.address });
      }
    }
    // First match goes by file order, across the addresses folded in.
    wildcard.bindings.sort((a, b) => a.rule.index - b.rule.index);
  }
  return listeners.filter((l) => !gone.has(l));
}

/** Rules whose target is their own listener: every session would come back. */
function findSelfBounces(
  listener: ListenerPlan,
  localAddresses: ReadonlySet<string>,
  looping: Set<Rule>,
): void {
  for (const { rule, targets, only } of listener.bindings) {
    if (looping.has(rule)) continue;
    const at = only ?? listener.address;
    if (targets.some((target) => loopsBack(target, listener, at, localAddresses))) {
      looping.add(rule);
    }
  }
}

function loopsBack(
  target: Target,
  listener: ListenerPlan,
  at: string,
  localAddresses: ReadonlySet<string>,
): boolean {
  if (target.port !== listener.port) return false;
  const address = parseIp(target.host);
  if ("error" in address) return false; // A name: checked per session (the relay's loop guard).
  const text = address.toString();
  if (!isWildcardAddress(at)) return text === at;
  return (address.range() === "loopback" || localAddresses.has(text)) && covers(at, text);
}

function loopProblem(
  rule: Rule,
  listeners: readonly ListenerPlan[],
): { rule: Rule; message: string } {
  const listener = listeners.find((l) => l.bindings.some((b) => b.rule === rule))!;
  const target = rule.action === "pass" ? targetsText(rule) : "";
  return {
    rule,
    message: `${
      ruleLabel(rule)
    }: bounce_to: "${target}" leads back to this rule's own listener ${listener.protocol} ${
      formatAddress(listener.address, listener.port)
    }${
      listener.bindings.length > 1 || rule.listen.some((l) => l.ports.first !== l.ports.last)
        ? " (or another of its ports)"
        : ""
    }: every session would come back to portbounce (give the target's real address or port)`,
  };
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
  return rule.bounceTo.map(({ host, ports }) => {
    const hostText = host.kind === "ip" ? host.address : host.name;
    if (ports === null) return { host: hostText, port };
    if (ports.first === ports.last) return { host: hostText, port: ports.first };
    return { host: hostText, port: ports.first + (port - endpoint.ports.first) };
  });
}

/**
 * A rule's source, resolved: an address as it is, an interface as its first
 * address of each family. An interface this host lacks, or one without an
 * address of a target's family, is a problem.
 */
function sourceOf(
  rule: Rule,
  host: HostFacts,
  file: string,
  problems: ConfigProblem[],
): SourcePlan | null {
  if (rule.action !== "pass" || rule.source === null) return null;
  const source = rule.source;
  if (source.kind === "ip") {
    return {
      v4: source.family === 4 ? source.address : null,
      v6: source.family === 6 ? source.address : null,
      text: source.text,
    };
  }
  const addresses = host.interfaces.get(source.name);
  if (!addresses) {
    problems.push({
      where: ruleWhere(file, rule, "source"),
      message: `${
        ruleLabel(rule)
      }: source: "${source.name}" is not a network interface of this host`,
    });
    return null;
  }
  const v4 = addresses.find((a) => !a.includes(":")) ?? null;
  const v6 = addresses.find((a) => a.includes(":")) ?? null;
  for (const target of rule.bounceTo) {
    if (target.host.kind !== "ip") continue;
    if ((target.host.family === 4 ? v4 : v6) === null) {
      problems.push({
        where: ruleWhere(file, rule, "source"),
        message: `${
          ruleLabel(rule)
        }: source: interface "${source.name}" has no IPv${target.host.family} address for target "${target.text}"`,
      });
    }
  }
  return { v4, v6, text: source.text };
}
