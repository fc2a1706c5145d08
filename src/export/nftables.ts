/**
 * The export as an nftables ruleset: one table of its own (`inet
 * portbounce` by default), loaded atomically by `nft -f` and replaced by a
 * second load. A filter chain before destination NAT applies the rules in
 * file order (pass, block, limits, logging) and drops what no pass rule lets
 * through on the exported addresses and ports (deny by default); a NAT chain
 * sends what passes to its targets; with `--masquerade` the router's address
 * becomes the source toward the targets. Pure.
 *
 * @module
 */
import type { ConfigProblem } from "../config/load.ts";
import { type Rule, ruleLabel, ruleWhere } from "../config/types.ts";
import { comment, type ExportOptions, header, interfaceName } from "./text.ts";
import {
  type ExportMatch,
  type ExportModel,
  type ExportRule,
  type ExportTarget,
  familiesOf,
  isLoopback,
  targetGuards,
} from "./model.ts";

/** `ct mark` of connections this table translated: 0x7062 ("pb") and the rule number. */
const MARK = 0x70620000;
const mark = (rule: Rule) => `0x${(MARK + rule.index).toString(16)}`;

/**
 * The model as nftables can do it: a listen address named by an interface
 * becomes the addresses that interface has here (nftables has no match for
 * "an address of this interface"; pf has), or a problem when it has none; a
 * throttle that nft can only approximate is said.
 */
export function nftModel(model: ExportModel): ExportModel {
  return {
    ...model,
    rules: model.rules.map((exported) => {
      const { rule } = exported;
      const problems: ConfigProblem[] = [...exported.problems];
      const matches: ExportMatch[] = exported.matches.flatMap((match) => {
        const d = match.destination;
        if (d.kind !== "interface") return [match];
        if (d.addresses.length === 0) {
          problems.push({
            where: ruleWhere(model.source, rule, "listen"),
            message: `${
              ruleLabel(rule)
            }: listen: interface ${d.name} has no address here: nftables matches addresses, so export on the router (or name the address); pf names the interface`,
          });
          return [];
        }
        return d.addresses.map((address) => ({
          ...match,
          destination: { kind: "address", address, family: address.includes(":") ? 6 : 4 },
          destinationName: `${d.name} at export`,
        }));
      });
      const notDone = [...exported.notDone];
      if (rule.action === "pass" && rule.throttle && !rate(rule.throttle).exact) {
        notDone.push(
          `throttle ${rule.throttle.text}: the router limits ${rate(rule.throttle).text}`,
        );
      }
      return { ...exported, matches, problems, notDone };
    }),
  };
}

/** Renders the model as `nft -f` input. */
export function renderNftables(model: ExportModel, options: ExportOptions): string {
  const table = options.table;
  /** Sets by name, emitted only when a line uses them. */
  const sets = new Map<string, string[]>();
  const defineSet = (name: string, family: 4 | 6, elements: readonly string[] | null) =>
    sets.set(name, [
      `\tset ${name} {`,
      `\t\ttype ipv${family}_addr`,
      // auto-merge: networks that overlap (198.51.100.0/24 and 198.51.100.7) are one interval.
      ...(elements
        ? [`\t\tflags interval`, `\t\tauto-merge`, `\t\telements = { ${elements.join(", ")} }`]
        : [
          `\t\tsize 65535`,
          `\t\tflags dynamic`,
        ]),
      `\t}`,
    ]);
  // Packets from elsewhere arrive at prerouting; this host's own (to loopback) leave through output.
  const chains = {
    filter: [] as string[],
    nat: [] as string[],
    filterOut: [] as string[],
    natOut: [] as string[],
  };
  const post: string[] = [];
  /** One chain per rule with limits: every line of the rule jumps to it, so they count once. */
  const limits: string[] = [];
  const denied = new Map<string, { text: string; loopback: boolean }>();

  for (const exported of model.rules) {
    const { rule } = exported;
    const leftOut = exported.problems.length > 0;
    const label = `${rule.name} (#${rule.index})${leftOut ? ": LEFT OUT, refused here" : ""}`;
    const prefix = `set${rule.index}`;
    const limitChain = !leftOut && rule.action === "pass" ? limitsOf(exported, prefix) : null;
    const labelled = new Set<string[]>();
    for (const match of exported.matches) {
      const loopback = isLoopback(match.destination);
      const filter = loopback ? chains.filterOut : chains.filter;
      const nat = loopback ? chains.natOut : chains.nat;
      for (const lines of leftOut ? [filter] : [filter, nat]) {
        if (!labelled.has(lines)) lines.push(comment(label, "\t\t"));
        labelled.add(lines);
      }
      for (const family of familiesOf(match)) {
        // Deny by default: once for each exported address, port and family.
        const key = `${match.protocol} ${family} ${
          JSON.stringify(match.destination)
        } ${match.ports.first}-${match.ports.last}`;
        if (!denied.has(key)) {
          denied.set(key, { text: destinationText(match, family, options.interface), loopback });
        }
        const head = matchText(match, family, exported, prefix, options.interface);
        if (head === null) continue; // No client of this family may use the rule.
        const networks = exported.from?.[family === 4 ? "v4" : "v6"];
        if (networks) defineSet(`${prefix}_from${family}`, family, networks);
        const note = match.destinationName ? ` comment ${nftString(match.destinationName)}` : "";
        if (leftOut) {
          filter.push(`\t\t${head} drop${note}`);
        } else if (rule.action === "pass" && !exported.targets.some((t) => t.family === family)) {
          // Refused rather than left to a later rule: see "Not done".
          filter.push(`\t\t${head} drop ${comment(`no IPv${family} target`)}`);
        } else if (rule.action === "block") {
          const log = rule.log.has("block") ? ` log prefix ${logPrefix(rule.name)}` : "";
          filter.push(`\t\t${head}${log} drop${note}`);
        } else {
          const ip = family === 4 ? "ip" : "ip6";
          if (limitChain) {
            for (const set of limitChain.sets) defineSet(set.name, set.family, null);
            filter.push(`\t\t${head} jump ${limitChain.name}`);
          }
          const log = rule.log.has("connect") ? ` log prefix ${logPrefix(rule.name)}` : "";
          filter.push(`\t\t${head}${log} accept${note}`);
          const to = dnatTarget(exported, match, family);
          nat.push(`\t\t${head} ct mark set ${mark(rule)} dnat ${ip} to ${to.text}${note}`);
          if (to.note) nat.push(comment(to.note, "\t\t"));
        }
      }
    }
    if (limitChain) {
      limits.push(
        "",
        `\tchain ${limitChain.name} {`,
        comment(label, "\t\t"),
        ...limitChain.body,
        "\t}",
      );
    }
    if (!leftOut && rule.action === "pass") post.push(...sourceNat(exported, options.masquerade));
  }

  const deny = (loopback: boolean) =>
    [...denied.values()].filter((d) => d.loopback === loopback).flatMap(({ text }) => [
      `\t\t${text} limit rate 10/minute burst 5 packets log prefix ${logPrefix("no rule")}`,
      `\t\t${text} drop`,
    ]);
  const chain = (name: string, hook: string, type: string, priority: string, body: string[]) =>
    body.length === 0 ? [] : [
      "",
      `\tchain ${name} {`,
      `\t\ttype ${type} hook ${hook} priority ${priority}; policy accept;`,
      ...body,
      "\t}",
    ];
  const filterBody = (rules: string[], loopback: boolean) => {
    const denies = deny(loopback);
    if (rules.length === 0 && denies.length === 0) return [];
    return [
      "\t\tct state established,related accept",
      ...rules,
      "\t\t# Deny by default: what no rule above lets through.",
      ...denies,
    ];
  };
  const lines = [
    ...header("nftables", options, model, routerLines(options)),
    `table inet ${table}`,
    `delete table inet ${table}`,
    "",
    `table inet ${table} {`,
    ...[...sets.values()].flat(),
    ...chain("filter", "prerouting", "filter", "dstnat - 10", filterBody(chains.filter, false)),
    ...chain("nat", "prerouting", "nat", "dstnat", chains.nat),
    ...chain("filter_local", "output", "filter", "-110", filterBody(chains.filterOut, true)),
    ...chain("nat_local", "output", "nat", "-100", chains.natOut),
    ...chain("forward", "forward", "filter", "filter", forwardBody(model, options.interface)),
    ...chain("postrouting", "postrouting", "nat", "srcnat", post),
    ...limits,
    "}",
  ];
  return lines.join("\n") + "\n";
}

/** What the router's own configuration needs for this table to work. */
function routerLines(options: ExportOptions): string[] {
  return [
    "The router must forward: sysctl -w net.ipv4.ip_forward=1 (and, for IPv6,",
    "net.ipv6.conf.all.forwarding=1). With forwarding off this loads and every client times out.",
    `Leave table inet ${options.table} to this file: a \`flush ruleset\` in the router's own file`,
    "deletes it (load this file after it). Base chains of every table see each packet, so a",
    "forward chain of the router's own with policy drop must accept what this table",
    "translated (`ct status dnat accept`) and a prerouting or input chain of its own must not",
    "drop the listen addresses and ports below.",
    "On the forward path the rules' targets are reached only through a rule's translation",
    "(chain forward): a client cannot reach them directly, as under portbounce.",
    "Translated connections carry ct mark 0x7062NNNN (NNNN: the rule): a router that sets",
    "connection marks of its own must leave these alone.",
  ];
}

/**
 * The forward chain: what a rule translated (and its replies) passes; the
 * targets' addresses and ports are dropped otherwise, so the router does not
 * open the old addresses to clients the rules kept out.
 */
function forwardBody(model: ExportModel, iif: string | null): string[] {
  const guards = targetGuards(model);
  if (guards.length === 0) return [];
  const on = iif ? `iifname "${interfaceName(iif)}" ` : "";
  return [
    "\t\tct status dnat accept",
    "\t\t# The targets: only through a rule above, never directly.",
    ...guards.flatMap((g) => {
      const ports = g.ports.first === g.ports.last
        ? `${g.ports.first}`
        : `${g.ports.first}-${g.ports.last}`;
      const text = `${on}${
        g.family === 4 ? "ip" : "ip6"
      } daddr ${g.address} ${g.protocol} dport ${ports}`;
      return [
        `\t\t${text} limit rate 10/minute burst 5 packets log prefix ${logPrefix("direct")}`,
        `\t\t${text} drop`,
      ];
    }),
  ];
}

/** Source NAT toward a pass rule's targets: its `source` (an address or an interface), or --masquerade. */
function sourceNat(exported: ExportRule, masquerade: boolean): string[] {
  const { rule } = exported;
  if (rule.action !== "pass") return [];
  const label = `${rule.name} (#${rule.index})`;
  const source = rule.source;
  if (source?.kind === "interface") {
    return [
      `\t\tct mark ${mark(rule)} oifname "${interfaceName(source.name)}" masquerade ${
        comment(`${label}: its source, ${source.name}`)
      }`,
    ];
  }
  const lines: string[] = [];
  if (source?.kind === "ip") {
    lines.push(
      `\t\tct mark ${mark(rule)} meta nfproto ipv${source.family} snat ${
        source.family === 4 ? "ip" : "ip6"
      } to ${source.address} ${comment(`${label}: its source`)}`,
    );
  }
  if (masquerade) {
    const other = source?.kind === "ip" ? ` meta nfproto ipv${source.family === 4 ? 6 : 4}` : "";
    lines.push(`\t\tct mark ${mark(rule)}${other} masquerade ${comment(label)}`);
  }
  return lines;
}

/** A rule's limits as one chain its lines jump to, or null when it has none. */
function limitsOf(
  exported: ExportRule,
  prefix: string,
): { name: string; body: string[]; sets: { name: string; family: 4 | 6 }[] } | null {
  const { rule } = exported;
  if (rule.action !== "pass") return null;
  const body: string[] = [];
  const sets: { name: string; family: 4 | 6 }[] = [];
  if (rule.maxSessions > 0) body.push(`\t\tct count over ${rule.maxSessions} drop`);
  if (rule.maxSessionsPerClient > 0) {
    for (const family of [4, 6] as const) {
      const name = `${prefix}_clients${family}`;
      sets.push({ name, family });
      body.push(
        `\t\tadd @${name} { ${
          family === 4 ? "ip" : "ip6"
        } saddr ct count over ${rule.maxSessionsPerClient} } drop`,
      );
    }
  }
  if (rule.throttle) {
    // As many at once as the throttle allows in its interval (nft's own burst is 5).
    const { text } = rate(rule.throttle);
    body.push(`\t\tlimit rate over ${text} burst ${rule.throttle.count} packets drop`);
  }
  return body.length === 0 ? null : { name: `limits${rule.index}`, body, sets };
}

/** A string in double quotes that nft reads as one token: only safe characters are kept. */
function nftString(text: string, max = 127): string {
  return `"${text.replace(/[^A-Za-z0-9 _.,:/@+=()-]/g, "_").slice(0, max)}"`;
}

function logPrefix(name: string): string {
  // nftables takes at most 127 characters; keep it short.
  return nftString(`portbounce ${name}: `, 60);
}

function destinationText(match: ExportMatch, family: 4 | 6, iif: string | null): string {
  const d = match.destination;
  // This host's own packets to loopback arrive on no interface: --interface is not theirs.
  const on = iif && !isLoopback(d) ? `iifname "${interfaceName(iif)}" ` : "";
  if (d.kind === "interface") throw new Error("export: nftables writes an interface's addresses");
  const where = on +
    (d.kind === "address"
      ? `${family === 4 ? "ip" : "ip6"} daddr ${d.address}`
      : `meta nfproto ipv${family} fib daddr type local`);
  const ports = match.ports.first === match.ports.last
    ? `${match.ports.first}`
    : `${match.ports.first}-${match.ports.last}`;
  return `${where} ${match.protocol} dport ${ports}`;
}

/** The match of a rule's packets, or null when its clients have no address of `family`. */
function matchText(
  match: ExportMatch,
  family: 4 | 6,
  exported: ExportRule,
  prefix: string,
  iif: string | null,
): string | null {
  const head = destinationText(match, family, iif);
  if (exported.from === null) return head;
  const networks = exported.from[family === 4 ? "v4" : "v6"];
  if (networks.length === 0) return null;
  return `${head} ${family === 4 ? "ip" : "ip6"} saddr @${prefix}_from${family}`;
}

/** `dnat ... to` for a match: the target (or targets, by balance), ports mapped as portbounce maps them. */
function dnatTarget(
  exported: ExportRule,
  match: ExportMatch,
  family: 4 | 6,
): { text: string; note?: string } {
  const rule = exported.rule;
  const targets = exported.targets.filter((t) => t.family === family);
  const balance = rule.action === "pass" ? rule.balance : "failover";
  const address = (t: ExportTarget) => family === 6 ? `[${t.address}]` : t.address;
  const portOf = (t: ExportTarget, port: number) =>
    t.ports === null
      ? port
      : t.ports.first === t.ports.last
      ? t.ports.first
      : t.ports.first + (port - match.ports.first);
  const ranged = match.ports.first !== match.ports.last;
  const one = (t: ExportTarget): string => {
    if (t.ports === null) return t.address;
    if (!ranged) return `${address(t)}:${portOf(t, match.ports.first)}`;
    if (t.ports.first === t.ports.last) return `${address(t)}:${t.ports.first}`;
    const map = [];
    for (let port = match.ports.first; port <= match.ports.last; port++) {
      map.push(`${port} : ${portOf(t, port)}`);
    }
    return `${t.address} : ${match.protocol} dport map { ${map.join(", ")} }`;
  };
  if (targets.length === 1 || balance === "failover" || ranged) {
    const note = targets.length > 1
      ? `${rule.name}: the router sends every session to ${targets[0].address}${
        ranged ? " (several targets with a port range)" : ""
      }; portbounce ${balance === "failover" ? "fails over to the next" : `balances (${balance})`}`
      : undefined;
    return { text: one(targets[0]), note };
  }
  const chooser = balance === "source-hash"
    ? `jhash ${family === 4 ? "ip" : "ip6"} saddr mod ${targets.length}`
    : `numgen inc mod ${targets.length}`;
  const entries = targets.map((t, i) =>
    t.ports === null && !ranged
      ? `${i} : ${t.address} . ${match.ports.first}`
      : `${i} : ${t.address} . ${portOf(t, match.ports.first)}`
  );
  return {
    text: `${chooser} map { ${entries.join(", ")} }`,
    note: balance === "least-sessions"
      ? `${rule.name}: least-sessions becomes taking turns (the router does not count sessions)`
      : undefined,
  };
}

/**
 * A throttle as nft writes a rate: `20/second`; another interval becomes
 * the same average rate per minute (`exact` false: said in "Not done").
 */
function rate(throttle: { count: number; intervalMs: number }): {
  text: string;
  exact: boolean;
} {
  const units: [string, number][] = [
    ["second", 1_000],
    ["minute", 60_000],
    ["hour", 3_600_000],
    ["day", 86_400_000],
  ];
  for (const [unit, ms] of units) {
    if (throttle.intervalMs === ms) return { text: `${throttle.count}/${unit}`, exact: true };
  }
  const perMinute = Math.max(1, Math.round((throttle.count * 60_000) / throttle.intervalMs));
  return { text: `${perMinute}/minute`, exact: false };
}
