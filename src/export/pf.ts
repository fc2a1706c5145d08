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
  isLoopback,
} from "./model.ts";
import { type ExportOptions, header } from "./text.ts";

/**
 * The model with what pf cannot do beyond any router: an address pool shares
 * one port, so targets whose ports differ get no round-robin or source-hash.
 */
export function pfModel(model: ExportModel & { ok: true }): ExportModel & { ok: true } {
  return {
    ...model,
    rules: model.rules.map((exported) => {
      const { rule } = exported;
      if (rule.action !== "pass" || rule.balance === "failover") return exported;
      const splitPool = ([4, 6] as const).some((family) => {
        const targets = exported.targets.filter((t) => t.family === family);
        return targets.length > 1 && !samePorts(targets);
      });
      return splitPool
        ? {
          ...exported,
          notDone: [
            ...exported.notDone,
            `${rule.balance}: a pf address pool shares one port and these targets' ports differ, so every session goes to the first target`,
          ],
        }
        : exported;
    }),
  };
}

function samePorts(targets: readonly ExportTarget[]): boolean {
  return targets.every((t) => JSON.stringify(t.ports) === JSON.stringify(targets[0].ports));
}

/** Renders the model as pf.conf lines. */
export function renderPf(model: ExportModel & { ok: true }, options: ExportOptions): string {
  const tables: string[] = [];
  const rules: string[] = [];
  const nat: string[] = [];
  const denied = new Map<string, string>();
  const on = options.interface ? ` on ${options.interface}` : "";

  for (const exported of model.rules) {
    const { rule } = exported;
    const table = `pb_${rule.name.replace(/[^A-Za-z0-9_]/g, "_")}_from`;
    if (exported.from !== null) {
      tables.push(
        `table <${table}> const { ${[...exported.from.v4, ...exported.from.v6].join(" ")} }`,
      );
    }
    rules.push(`# ${rule.name} (#${rule.index})`);
    for (const match of exported.matches) {
      for (const family of familiesOf(match, exported)) {
        const af = family === 4 ? "inet" : "inet6";
        if (exported.from !== null && exported.from[family === 4 ? "v4" : "v6"].length === 0) {
          continue;
        }
        const from = exported.from === null ? "any" : `<${table}>`;
        const to = `${destination(match, options.interface)} port ${ports(match)}`;
        // This host's own clients reach a loopback listener in on lo0.
        const where = isLoopback(match.destination) ? " on lo0" : on;
        const what = `${where} ${af} proto ${match.protocol} from ${from} to ${to}`;
        if (rule.action === "block") {
          rules.push(`block in${rule.log.has("block") ? " log" : ""} quick${what}`);
        } else {
          const targets = exported.targets.filter((t) => t.family === family);
          const log = rule.log.has("connect") ? " log" : "";
          rules.push(
            `pass in${log} quick${what} ${rdr(exported, match, targets)}${state(exported)}`,
          );
          if (options.masquerade) {
            for (const target of targets) {
              const source = rule.source?.kind === "ip" && rule.source.family === family
                ? rule.source.address
                : "(egress:0)";
              nat.push(
                `match out on egress ${af} proto ${match.protocol} to ${target.address}${
                  target.ports === null ? ` port ${ports(match)}` : ` port ${portsOf(target)}`
                } nat-to ${source} # ${rule.name} (#${rule.index})`,
              );
            }
          }
        }
        const key = `${af} ${match.protocol} ${to}`;
        if (!denied.has(key)) {
          denied.set(key, `block in log quick${where} ${af} proto ${match.protocol} to ${to}`);
        }
      }
    }
  }
  const loopback = model.rules.some((r) => r.matches.some((m) => isLoopback(m.destination)));
  return [
    ...header("pf", options, model),
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
    ...(nat.length > 0
      ? ["", "# --masquerade: toward the targets, this router's address.", ...mergeNat(nat)]
      : []),
  ].filter((line): line is string => line !== null).join("\n") + "\n";
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

function familiesOf(match: ExportMatch, exported: ExportRule): (4 | 6)[] {
  const d = match.destination;
  if (d.kind === "address") return [d.family];
  if (d.kind === "local" && d.family !== null) return [d.family];
  return ([4, 6] as const).filter((family) =>
    exported.rule.action !== "pass" || exported.targets.some((t) => t.family === family)
  );
}

function destination(match: ExportMatch, iif: string | null): string {
  const d = match.destination;
  if (d.kind === "address") return d.address;
  if (d.kind === "interface") return `(${d.name})`;
  return iif ? `(${iif})` : "self";
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
function rdr(exported: ExportRule, match: ExportMatch, targets: readonly ExportTarget[]): string {
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
      ? ""
      : balance === "failover"
      ? ` # every session to ${first.address}: pf does not fail over`
      : ` # every session to ${first.address}: a pool shares one port; these targets' ports differ`;
    return `rdr-to ${first.address}${port}${note}`;
  }
  const pool = balance === "source-hash" ? "source-hash" : "round-robin";
  const note = balance === "least-sessions" ? " # least-sessions: taking turns instead" : "";
  return `rdr-to { ${targets.map((t) => t.address).join(" ")} }${port} ${pool}${note}`;
}

/** `keep state (...)` for the rule's limits, where pf has them. */
function state(exported: ExportRule): string {
  const rule = exported.rule;
  if (rule.action !== "pass") return "";
  const options: string[] = [];
  if (rule.maxSessions > 0) options.push(`max ${rule.maxSessions}`);
  if (rule.maxSessionsPerClient > 0 || rule.throttle) options.push("source-track rule");
  if (rule.maxSessionsPerClient > 0) options.push(`max-src-conn ${rule.maxSessionsPerClient}`);
  if (rule.throttle) {
    // pf limits the rate per client, not per rule: the nearest it has.
    const seconds = Math.max(1, Math.round(rule.throttle.intervalMs / 1000));
    options.push(`max-src-conn-rate ${rule.throttle.count}/${seconds}`);
  }
  if (options.length === 0) return "";
  const note = rule.throttle ? " # pf's rate is per client; portbounce's throttle is per rule" : "";
  return ` keep state (${options.join(", ")})${note}`;
}
