/**
 * The export in pf.conf(5) syntax (OpenBSD): tables for client networks,
 * `pass in quick ... rdr-to` per pass rule and `block in quick` per block
 * rule in file order (`quick`: the first matching rule decides, as in
 * portbounce, where pf would otherwise take the last), then a `block` for
 * each exported address and port (deny by default); `nat-to` with
 * `--masquerade`. Pure.
 *
 * @module
 */
import {
  type ExportMatch,
  type ExportModel,
  type ExportRule,
  type ExportTarget,
  familiesOf,
  isLoopback,
  targetGuards,
} from "./model.ts";
import { comment, commentText, type ExportOptions, header, interfaceName } from "./text.ts";

/**
 * The model with what pf cannot do beyond any router: an address pool shares
 * one port, so targets whose ports differ get no round-robin or source-hash;
 * a state limit counts per pf rule, so a rule written as several pf rules
 * (addresses, protocols, families) has its limits once on each; per-client
 * rates count TCP only.
 */
export function pfModel(model: ExportModel, masquerade = false): ExportModel {
  // pf applies the last `match out` that matches: rules sharing a target need the same source.
  const natByTarget = new Map<string, string>();
  return {
    ...model,
    rules: model.rules.map((exported) => {
      const { rule } = exported;
      if (rule.action !== "pass" || exported.problems.length > 0) return exported;
      const notDone = [...exported.notDone];
      for (const target of exported.targets) {
        const nat = JSON.stringify(natOf(rule, target.family, masquerade));
        const key = `${target.address} ${JSON.stringify(target.ports)}`;
        const earlier = natByTarget.get(key);
        if (earlier !== undefined && earlier !== nat) {
          notDone.push(
            `its own source toward ${target.address}: an earlier rule sends to the same target from another source, and pf translates by target, so the last line decides for both`,
          );
        }
        natByTarget.set(key, nat);
      }
      const splitPool = rule.balance !== "failover" && ([4, 6] as const).some((family) => {
        const targets = exported.targets.filter((t) => t.family === family);
        return targets.length > 1 && !samePorts(targets);
      });
      if (splitPool) {
        notDone.push(
          `${rule.balance}: a pf address pool shares one port and these targets' ports differ, so every session goes to the first target`,
        );
      }
      const lines = pfLines(exported).filter(({ family }) =>
        exported.targets.some((t) => t.family === family)
      ).length;
      const limited = [
        rule.maxSessions > 0 ? `max_sessions ${rule.maxSessions}` : null,
        rule.maxSessionsPerClient > 0
          ? `max_sessions_per_client ${rule.maxSessionsPerClient}`
          : null,
      ].filter((x): x is string => x !== null);
      if (lines > 1 && limited.length > 0) {
        notDone.push(
          `${
            limited.join(" and ")
          } once for the whole rule: pf counts states per pf rule, and this rule is ${lines} of them, so the router admits up to ${lines} times as many`,
        );
      }
      if (rule.throttle) {
        const seconds = Math.max(1, Math.round(rule.throttle.intervalMs / 1000));
        notDone.push(
          `throttle ${rule.throttle.text}: pf limits the rate per client (max-src-conn-rate ${rule.throttle.count}/${seconds}), not for the rule as a whole${
            seconds * 1000 !== rule.throttle.intervalMs ? `, in whole seconds` : ""
          }${rule.protocols.includes("udp") ? ", and for TCP only" : ""}`,
        );
      }
      return notDone.length === exported.notDone.length ? exported : { ...exported, notDone };
    }),
  };
}

function samePorts(targets: readonly ExportTarget[]): boolean {
  return targets.every((t) => JSON.stringify(t.ports) === JSON.stringify(targets[0].ports));
}

/** The (match, family) pairs a rule becomes, one pf rule each (families its clients have). */
function pfLines(exported: ExportRule): { match: ExportMatch; family: 4 | 6 }[] {
  return exported.matches.flatMap((match) =>
    familiesOf(match)
      .filter((family) =>
        exported.from === null || exported.from[family === 4 ? "v4" : "v6"].length > 0
      )
      .map((family) => ({ match, family }))
  );
}

/** The tag of sessions a rule translated, for the router's own `pass out quick tagged`. */
export const PF_TAG = "portbounce";

/** Renders the model as pf.conf lines. */
export function renderPf(model: ExportModel, options: ExportOptions): string {
  const tables: string[] = [];
  const rules: string[] = [];
  const nat: string[] = [];
  const denied = new Map<string, string>();
  const on = options.interface ? ` on ${interfaceName(options.interface)}` : "";

  for (const exported of model.rules) {
    const { rule } = exported;
    const leftOut = exported.problems.length > 0;
    // pf table names have at most 31 characters; the rule number keeps them apart.
    const table = `pb${rule.index}_${rule.name.replace(/[^A-Za-z0-9_]/g, "_")}`.slice(0, 31);
    if (exported.from !== null) {
      tables.push(
        `table <${table}> const { ${[...exported.from.v4, ...exported.from.v6].join(" ")} }`,
      );
    }
    rules.push(
      comment(`${rule.name} (#${rule.index})${leftOut ? ": LEFT OUT, refused here" : ""}`),
    );
    // Deny by default on every family of every listen address, whoever the rule's clients are.
    for (const match of exported.matches) {
      for (const family of familiesOf(match)) {
        const af = family === 4 ? "inet" : "inet6";
        const to = `${destination(match, options.interface)} port ${ports(match)}`;
        const where = isLoopback(match.destination) ? " on lo0" : on;
        const key = `${af} ${match.protocol} ${to} ${where}`;
        if (!denied.has(key)) {
          denied.set(key, `block in log quick${where} ${af} proto ${match.protocol} to ${to}`);
        }
      }
    }
    for (const { match, family } of pfLines(exported)) {
      const af = family === 4 ? "inet" : "inet6";
      const from = exported.from === null ? "any" : `<${table}>`;
      const to = `${destination(match, options.interface)} port ${ports(match)}`;
      // This host's own clients reach a loopback listener in on lo0.
      const where = isLoopback(match.destination) ? " on lo0" : on;
      const what = `${where} ${af} proto ${match.protocol} from ${from} to ${to}`;
      const targets = exported.targets.filter((t) => t.family === family);
      if (leftOut) {
        rules.push(`block in quick${what}`);
      } else if (rule.action === "pass" && targets.length === 0) {
        // Refused rather than left to a later rule: see "Not done".
        rules.push(`block in quick${what} # ${commentText(`no IPv${family} target`)}`);
      } else if (rule.action === "block") {
        rules.push(`block in${rule.log.has("block") ? " log" : ""} quick${what}`);
      } else {
        const log = rule.log.has("connect") ? " log" : "";
        const translation = rdr(exported, match, targets);
        const limits = state(exported, match.protocol);
        const notes = [translation.note, limits.note].filter((n) => n !== null);
        rules.push(
          `pass in${log} quick${what} ${translation.text} tag ${PF_TAG}${limits.text}${
            notes.length > 0 ? ` # ${commentText(notes.join("; "))}` : ""
          }`,
        );
        nat.push(...sourceNat(exported, match, family, targets, options.masquerade));
      }
    }
  }
  const guards = targetGuards(model).map((g) =>
    `block in log quick${on} ${
      g.family === 4 ? "inet" : "inet6"
    } proto ${g.protocol} to ${g.address} port ${
      g.ports.first === g.ports.last ? g.ports.first : `${g.ports.first}:${g.ports.last}`
    }`
  );
  const loopback = model.rules.some((r) => r.matches.some((m) => isLoopback(m.destination)));
  const macro = nat.some((line) => line.includes(OUT))
    ? [
      "# The interface toward the targets, for source NAT: egress is the group of the interface",
      "# with the default route; name the one the old servers are behind if it is another.",
      'pb_out = "egress"',
      "",
    ]
    : [];
  return [
    ...header("pf", options, model, routerLines()),
    ...macro,
    ...(loopback
      ? [
        "# Rules on lo0 take this host's own clients: pf must not skip lo0 (no `set skip on lo`).",
        "",
      ]
      : []),
    ...tables,
    tables.length > 0 ? "" : null,
    ...rules,
    "# Deny by default: what no rule above lets through.",
    ...denied.values(),
    ...(guards.length > 0
      ? ["# The targets: only through a rule above (rdr-to), never directly.", ...guards]
      : []),
    ...(nat.length > 0
      ? ["", "# Toward the targets, this router's address.", ...mergeNat(nat)]
      : []),
  ].filter((line): line is string => line !== null).join("\n") + "\n";
}

/** What the router's own pf.conf needs for these lines to work, and what pf cannot express. */
function routerLines(): string[] {
  return [
    "The router must forward: sysctl net.inet.ip.forwarding=1 (and, for IPv6,",
    "net.inet6.ip6.forwarding=1). With forwarding off this loads and every client times out.",
    "Include these lines before the router's own filter rules: they use `quick`, so the",
    "first that matches decides. A rule of the router's own that redirects to the same",
    "targets before them, or a `set skip` on the interfaces, undoes them. Translated",
    `sessions are tagged ${PF_TAG}: a ruleset that blocks outbound traffic needs`,
    `\`pass out quick tagged ${PF_TAG}\`.`,
    "Direct traffic to the rules' targets is blocked (block in ... to TARGET), as under",
    "portbounce. pf cannot share one state limit between several pf rules, nor limit the",
    "rate of UDP sessions (see Not done).",
  ];
}

/** The macro naming the interface toward the targets, where the rule file does not say. */
const OUT = "$pb_out";

/**
 * Where a pass rule's sessions leave from toward its targets: its `source`
 * interface (out of it, with its address), its source address or, with
 * --masquerade, the router's address, out of `$pb_out`; null: unchanged.
 */
function natOf(
  rule: ExportRule["rule"],
  family: 4 | 6,
  masquerade: boolean,
): { on: string; to: string } | null {
  if (rule.action !== "pass") return null;
  const source = rule.source;
  if (source?.kind === "interface") {
    return { on: interfaceName(source.name), to: `(${interfaceName(source.name)})` };
  }
  if (source?.kind === "ip" && source.family === family) return { on: OUT, to: source.address };
  return masquerade ? { on: OUT, to: `(${OUT}:0)` } : null;
}

/** `match out ... nat-to` toward a match's targets: the rule's source, or --masquerade. */
function sourceNat(
  exported: ExportRule,
  match: ExportMatch,
  family: 4 | 6,
  targets: readonly ExportTarget[],
  masquerade: boolean,
): string[] {
  const { rule } = exported;
  if (rule.action !== "pass") return [];
  const af = family === 4 ? "inet" : "inet6";
  const translation = natOf(rule, family, masquerade);
  if (translation === null) return [];
  return targets.map((target) =>
    `match out on ${translation.on} ${af} proto ${match.protocol} to ${target.address}${
      target.ports === null ? ` port ${ports(match)}` : ` port ${portsOf(target)}`
    } nat-to ${translation.to} # ${commentText(`${rule.name} (#${rule.index})`)}`
  );
}

/** One line per distinct translation, naming every rule it serves. */
function mergeNat(lines: readonly string[]): string[] {
  const byRule = new Map<string, string[]>();
  for (const line of lines) {
    const [rule, comment] = line.split(" # ");
    byRule.set(rule, [...(byRule.get(rule) ?? []), comment]);
  }
  return [...byRule].map(([rule, names]) => `${rule} # ${names.join(", ")}`);
}

function destination(match: ExportMatch, iif: string | null): string {
  const d = match.destination;
  if (d.kind === "address") return d.address;
  if (d.kind === "interface") return `(${interfaceName(d.name)})`;
  return iif ? `(${interfaceName(iif)})` : "self";
}

function ports(match: ExportMatch): string {
  return match.ports.first === match.ports.last
    ? `${match.ports.first}`
    : `${match.ports.first}:${match.ports.last}`;
}

function portsOf(target: ExportTarget): string {
  return target.ports!.first === target.ports!.last
    ? `${target.ports!.first}`
    : `${target.ports!.first}:${target.ports!.last}`;
}

/** `rdr-to ...`: one target, or a pool by balance; ranges map 1:1 (`port 9000:*`). */
function rdr(
  exported: ExportRule,
  match: ExportMatch,
  targets: readonly ExportTarget[],
): { text: string; note: string | null } {
  const rule = exported.rule;
  const balance = rule.action === "pass" ? rule.balance : "failover";
  const first = targets[0];
  const ranged = match.ports.first !== match.ports.last;
  const port = first.ports === null
    ? ""
    : first.ports.first === first.ports.last
    ? ` port ${first.ports.first}`
    : ranged
    ? ` port ${first.ports.first}:*`
    : ` port ${first.ports.first}`;
  const onePort = samePorts(targets);
  if (targets.length === 1 || balance === "failover" || !onePort) {
    const note = targets.length === 1
      ? null
      : balance === "failover"
      ? `every session to ${first.address}: pf does not fail over`
      : `every session to ${first.address}: a pool shares one port; these targets' ports differ`;
    return { text: `rdr-to ${first.address}${port}`, note };
  }
  const pool = balance === "source-hash" ? "source-hash" : "round-robin";
  return {
    text: `rdr-to { ${targets.map((t) => t.address).join(" ")} }${port} ${pool}`,
    note: balance === "least-sessions" ? "least-sessions: taking turns instead" : null,
  };
}

/**
 * `keep state (...)` for the rule's limits, where pf has them: per client,
 * established TCP connections (`max-src-conn`) or UDP states
 * (`max-src-states`); the rate per client, for TCP only.
 */
function state(
  exported: ExportRule,
  protocol: "tcp" | "udp",
): { text: string; note: string | null } {
  const rule = exported.rule;
  if (rule.action !== "pass") return { text: "", note: null };
  const options: string[] = [];
  const rated = rule.throttle !== null && protocol === "tcp";
  if (rule.maxSessions > 0) options.push(`max ${rule.maxSessions}`);
  if (rule.maxSessionsPerClient > 0 || rated) options.push("source-track rule");
  if (rule.maxSessionsPerClient > 0) {
    options.push(
      `${protocol === "tcp" ? "max-src-conn" : "max-src-states"} ${rule.maxSessionsPerClient}`,
    );
  }
  if (rated && rule.throttle) {
    // pf limits the rate per client, not per rule: the nearest it has.
    const seconds = Math.max(1, Math.round(rule.throttle.intervalMs / 1000));
    options.push(`max-src-conn-rate ${rule.throttle.count}/${seconds}`);
  }
  if (options.length === 0) return { text: "", note: null };
  return {
    text: ` keep state (${options.join(", ")})`,
    note: rated ? "pf's rate is per client; portbounce's throttle is per rule" : null,
  };
}
