/**
 * What `portbounce export` turns into router rules: every rule's listen
 * addresses, ports, protocols, client networks and targets, with names
 * resolved, in file order, and what a router cannot do of it. Pure: names
 * and interfaces are resolved before, and passed in.
 *
 * @module
 */
import type { ListenEndpoint, PortRange, TargetEndpoint } from "../config/endpoint.ts";
import { formatDuration } from "../config/duration.ts";
import type { ConfigProblem } from "../config/load.ts";
import { type IpAddress, parseIp } from "../config/network.ts";
import { formatSize } from "../config/size.ts";
import { type Config, type PassRule, type Rule, ruleLabel, ruleWhere } from "../config/types.ts";

/** Where packets are headed, as the router matches them. */
export type Destination =
  /** One address. */
  | { readonly kind: "address"; readonly address: string; readonly family: 4 | 6 }
  /** Any address of the router (`*`, `0.0.0.0`, `[::]`), of one family or both. */
  | { readonly kind: "local"; readonly family: 4 | 6 | null }
  /**
   * An address of a network interface of the router: pf names the interface
   * (`(eth1)`, its addresses as they are then); nftables writes the addresses
   * it has here, at export.
   */
  | { readonly kind: "interface"; readonly name: string; readonly addresses: readonly string[] };

/** One target, resolved. */
export interface ExportTarget {
  readonly address: string;
  readonly family: 4 | 6;
  /** As written, when it was a name (for a comment). */
  readonly name: string | null;
  /** Null keeps the listen port; a range of the listen range's length maps port N to the N-th. */
  readonly ports: PortRange | null;
}

/** One (listen address, ports, protocol) of a rule. */
export interface ExportMatch {
  readonly protocol: "tcp" | "udp";
  readonly destination: Destination;
  /** As written, when it was a host name (for a comment). */
  readonly destinationName: string | null;
  readonly ports: PortRange;
}

/** A rule, as the router is to apply it. */
export interface ExportRule {
  readonly rule: Rule;
  readonly matches: readonly ExportMatch[];
  /** Client networks by family; null: any client. */
  readonly from: { readonly v4: readonly string[]; readonly v6: readonly string[] } | null;
  /** For pass rules, the targets of each family (a family without one cannot be bounced). */
  readonly targets: readonly ExportTarget[];
  /** What the router will not do of this rule, one line each. */
  readonly notDone: readonly string[];
  /**
   * Why a router cannot do this rule; empty when it can. A rule with problems
   * is left out (`--skip-unsupported`): what is known of its matches is
   * refused in its place, so no later rule takes its clients.
   */
  readonly problems: readonly ConfigProblem[];
}

/** A target address, protocol and ports that the router reaches only by a rule's translation. */
export interface TargetGuard {
  readonly family: 4 | 6;
  readonly address: string;
  readonly protocol: "tcp" | "udp";
  readonly ports: PortRange;
}

/** Addresses found for names, for export (listen host names, target names, interfaces). */
export interface ExportNames {
  /** Host name -> its addresses. */
  readonly hosts: ReadonlyMap<string, readonly string[]>;
  /** Interfaces this host has, with their addresses. */
  readonly interfaces: ReadonlyMap<string, readonly string[]>;
  /** Whether an address is one of the router's own (loopback always is). */
  isLocal(address: IpAddress): boolean;
}

/** The whole export: every rule in file order, each with what keeps a router from doing it. */
export interface ExportModel {
  /** The rule file, for the location of problems. */
  readonly source: string;
  readonly rules: readonly ExportRule[];
}

/** Every problem of the model, in file order; none: the router can do every rule. */
export function exportProblems(model: ExportModel): ConfigProblem[] {
  return model.rules.flatMap((r) => r.problems);
}

/** The rules a router can do. */
export function exportedRules(model: ExportModel): ExportRule[] {
  return model.rules.filter((r) => r.problems.length === 0);
}

/**
 * Where the targets of the exported pass rules are reached (address,
 * protocol, ports), once each: on the forward path, packets to these pass
 * only as the result of a rule's translation. Loopback targets are not
 * forwarded and are left out.
 */
export function targetGuards(model: ExportModel): TargetGuard[] {
  const guards = new Map<string, TargetGuard>();
  // A rule left out keeps its targets guarded: they were unreachable under portbounce too.
  for (const exported of model.rules) {
    if (exported.rule.action !== "pass") continue;
    for (const match of exported.matches) {
      if (isLoopback(match.destination)) continue;
      for (const target of exported.targets) {
        const ip = parseIp(target.address);
        if ("error" in ip || ip.range() === "loopback") continue;
        const ports = target.ports === null
          ? match.ports
          : target.ports.first === target.ports.last
          ? target.ports
          : {
            first: target.ports.first,
            last: target.ports.first + (match.ports.last - match.ports.first),
          };
        const guard = {
          family: target.family,
          address: target.address,
          protocol: match.protocol,
          ports,
        };
        guards.set(JSON.stringify(guard), guard);
      }
    }
  }
  return [...guards.values()];
}

/** Builds the export model of a valid rule set. */
export function buildExport(config: Config, names: ExportNames): ExportModel {
  const rules: ExportRule[] = [];
  for (const rule of config.rules) {
    const problems: ConfigProblem[] = [];
    const where = (key: string) => ruleWhere(config.source, rule, key);
    const matches: ExportMatch[] = [];
    for (const endpoint of rule.listen) {
      const destinations = destinationsOf(endpoint, names);
      if ("error" in destinations) {
        problems.push({
          where: where("listen"),
          message: `${ruleLabel(rule)}: listen: ${destinations.error}`,
        });
        continue;
      }
      for (const protocol of rule.protocols) {
        for (const destination of destinations) {
          matches.push({
            protocol,
            destination,
            destinationName: endpoint.host.kind === "name" && destination.kind === "address"
              ? endpoint.host.name
              : null,
            ports: endpoint.ports,
          });
        }
      }
      if (endpoint.ports.first === 0) {
        problems.push({
          where: where("listen"),
          message: `${
            ruleLabel(rule)
          }: listen: "${endpoint.text}": port 0 is picked when portbounce starts; a router needs the port`,
        });
      }
    }
    const targets: ExportTarget[] = [];
    // Loopback listeners take this host's own clients: their packets can be redirected locally,
    // never elsewhere (a rule listening on loopback and on other addresses must keep both true).
    const local = matches.some((m) => isLoopback(m.destination));
    const remote = matches.some((m) => !isLoopback(m.destination));
    if (rule.action === "pass") {
      for (const endpoint of rule.bounceTo) {
        const resolved = targetsOf(endpoint, names);
        if ("error" in resolved) {
          problems.push({
            where: where("bounce_to"),
            message: `${ruleLabel(rule)}: bounce_to: ${resolved.error}`,
          });
          continue;
        }
        for (const target of resolved) {
          const ip = parseIp(target.address) as IpAddress;
          if (local && ip.range() !== "loopback") {
            problems.push({
              where: where("bounce_to"),
              message: `${
                ruleLabel(rule)
              }: bounce_to: "${endpoint.text}" is elsewhere, but the rule listens on loopback: packets from 127.0.0.1 cannot leave the host, so a router cannot do this; listen on the router's own address instead`,
            });
          } else if (remote && names.isLocal(ip)) {
            problems.push({
              where: where("bounce_to"),
              message: `${
                ruleLabel(rule)
              }: bounce_to: "${endpoint.text}" is on the router itself (${target.address}) while clients come from elsewhere: a router translates their packets toward other hosts, not to its own services; keep portbounce for this rule, or give the target's own address`,
            });
          }
          targets.push(target);
        }
      }
      for (const match of matches) {
        const family = familyOf(match.destination);
        if (family === null) continue;
        if (!targets.some((t) => t.family === family)) {
          problems.push({
            where: where("bounce_to"),
            message: `${ruleLabel(rule)}: bounce_to has no IPv${family} target for listen ${
              describeDestination(match.destination)
            }: a router cannot translate between families`,
          });
        }
      }
    }
    // One rule on TCP and UDP meets the same problem twice: say it once.
    const unique = problems.filter((p, i) =>
      problems.findIndex((q) => q.where === p.where && q.message === p.message) === i
    );
    const known = matches.filter((m) => m.ports.first !== 0);
    rules.push({
      rule,
      // A port the router cannot know is no match of its.
      matches: known,
      from: fromOf(rule),
      targets,
      notDone: [...notDone(rule), ...refusedFamilies(rule, known, targets)],
      problems: unique,
    });
  }
  return { source: config.source, rules };
}

/**
 * The address families a match is written for: its destination's, or both
 * for any local address and an interface. A pass rule without a target of
 * one of them refuses that family's clients (see `notDone`), so that no later
 * rule takes them.
 */
export function familiesOf(match: ExportMatch): (4 | 6)[] {
  const d = match.destination;
  if (d.kind === "address") return [d.family];
  if (d.kind === "local" && d.family !== null) return [d.family];
  return [4, 6];
}

/** Whether packets to a destination come from this host only (loopback addresses). */
export function isLoopback(destination: Destination): boolean {
  const loopback = (address: string) => {
    const ip = parseIp(address);
    return !("error" in ip) && ip.range() === "loopback";
  };
  if (destination.kind === "address") return loopback(destination.address);
  // The loopback interface: its addresses are all loopback.
  return destination.kind === "interface" && destination.addresses.length > 0 &&
    destination.addresses.every(loopback);
}

function familyOf(destination: Destination): 4 | 6 | null {
  return destination.kind === "address"
    ? destination.family
    : destination.kind === "local"
    ? destination.family
    : null;
}

/** `203.0.113.10`, `any local address`, `interface eth1`. */
export function describeDestination(destination: Destination): string {
  switch (destination.kind) {
    case "address":
      return destination.address;
    case "local":
      return destination.family === null
        ? "any local address"
        : `any local IPv${destination.family} address`;
    case "interface":
      return `interface ${destination.name}`;
  }
}

function destinationsOf(
  endpoint: ListenEndpoint,
  names: ExportNames,
): Destination[] | { error: string } {
  const host = endpoint.host;
  switch (host.kind) {
    case "any":
      return [{ kind: "local", family: null }];
    case "ip":
      if (host.address === "0.0.0.0") return [{ kind: "local", family: 4 }];
      if (host.address === "::") return [{ kind: "local", family: null }];
      return [{ kind: "address", address: host.address, family: host.family }];
    case "name": {
      const addresses = names.interfaces.get(host.name);
      if (addresses) return [{ kind: "interface", name: host.name, addresses }];
      const found = names.hosts.get(host.name);
      if (!found || found.length === 0) return { error: `"${host.name}" did not resolve` };
      return found.map((address) => ({
        kind: "address" as const,
        address,
        family: address.includes(":") ? 6 as const : 4 as const,
      }));
    }
  }
}

function targetsOf(
  endpoint: TargetEndpoint,
  names: ExportNames,
): ExportTarget[] | { error: string } {
  const host = endpoint.host;
  if (host.kind === "ip") {
    return [{ address: host.address, family: host.family, name: null, ports: endpoint.ports }];
  }
  const found = names.hosts.get(host.name);
  if (!found || found.length === 0) return { error: `"${host.name}" did not resolve` };
  // A router rule takes one address per name: the first the resolver gives of each family.
  const v4 = found.find((a) => !a.includes(":"));
  const v6 = found.find((a) => a.includes(":"));
  return [v4, v6].filter((a): a is string => a !== undefined).map((address) => ({
    address,
    family: address.includes(":") ? 6 : 4,
    name: host.name,
    ports: endpoint.ports,
  }));
}

function fromOf(rule: Rule): ExportRule["from"] {
  const networks = rule.from.map((n) => n.text);
  if (networks.includes("0.0.0.0/0") && networks.includes("::/0")) return null;
  return {
    v4: networks.filter((n) => !n.includes(":")),
    v6: networks.filter((n) => n.includes(":")),
  };
}

/** Clients of a family a wildcard or interface listener takes, but no target of the rule has. */
function refusedFamilies(
  rule: Rule,
  matches: readonly ExportMatch[],
  targets: readonly ExportTarget[],
): string[] {
  if (rule.action !== "pass") return [];
  const lines: string[] = [];
  for (const family of [4, 6] as const) {
    if (targets.some((t) => t.family === family)) continue;
    const wide = matches.filter((m) => familyOf(m.destination) === null);
    for (const where of new Set(wide.map((m) => describeDestination(m.destination)))) {
      lines.push(
        `IPv${family} clients of ${where} are refused: the rule has no IPv${family} target, and a router cannot translate between families`,
      );
    }
  }
  return lines;
}

/** What portbounce does for a rule that a packet filter cannot. */
function notDone(rule: Rule): string[] {
  const lines: string[] = [];
  if (rule.action !== "pass") return lines;
  const pass = rule as PassRule;
  // Defaults are said once in the header; what the rule sets itself is said here.
  if (pass.idleTimeoutMs > 0) lines.push(`idle_timeout ${formatDuration(pass.idleTimeoutMs)}`);
  if (pass.stallTimeoutMs !== 300_000 && pass.stallTimeoutMs > 0) {
    lines.push(`stall_timeout ${formatDuration(pass.stallTimeoutMs)}`);
  }
  if (pass.protocols.includes("udp") && pass.udpIdleTimeoutMs !== 60_000) {
    lines.push(
      `udp_idle_timeout ${formatDuration(pass.udpIdleTimeoutMs)} (conntrack's UDP timeouts apply)`,
    );
  }
  if (pass.bounceTo.length > 1 && pass.balance === "failover") {
    lines.push("failover to the next target: the router sends every session to the first");
  }
  if (pass.bounceTo.length > 1 && pass.balance === "least-sessions") {
    lines.push("least-sessions: the router takes turns (round-robin) instead");
  }
  if (pass.healthCheck || pass.bounceTo.length > 1) lines.push("health checks of the targets");
  if (pass.proxyProtocol) {
    lines.push(
      `proxy_protocol ${pass.proxyProtocol}: the router forwards packets as they are; a target expecting a PROXY header will refuse them`,
    );
  }
  if (pass.bandwidth !== null) {
    lines.push(
      `bandwidth ${
        formatSize(pass.bandwidth)
      }/s as backpressure: the router drops packets beyond the rate instead`,
    );
  }
  return lines;
}
