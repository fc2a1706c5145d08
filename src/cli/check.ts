/**
 * `portbounce check`: validate a rule file and print the resolved
 * listener -> target table, as text or JSON. Binds nothing.
 *
 * @module
 */
import { countOf } from "../config/describe.ts";
import { formatAddress } from "../config/endpoint.ts";
import { formatProblem } from "../config/load.ts";
import type { Rule } from "../config/types.ts";
import { formatTarget, type ListenerPlan } from "../rules/plan.ts";
import { parseCommandArgs } from "./args.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { probeAll } from "./probe.ts";
import { costWarnings, isolatesAsked, listenerCosts } from "../rules/costs.ts";
import { loadRuleFile } from "../server/rule_file.ts";
import { preflight } from "../daemon/preflight.ts";

/** Help for `portbounce check`. */
export const CHECK_HELP = `Usage: portbounce check [-c FILE] [--json] [--probe] [--no-host-checks]

Validates FILE (default /etc/portbounce.toml) and prints, for every listener,
the rules that decide its clients in order and where each sends them.
Reports every problem at once, including what run would meet on this
host: listen addresses it does not have, log files it cannot open. Binds nothing.

Options:
  -c, --config FILE   rule file (default /etc/portbounce.toml)
      --json          print the table (or the problems) as JSON
      --probe         also connect to every TCP target of every pass rule as a
                      session would (within its connect_timeout, from its source)
                      and report ok, refused, timeout, unresolvable or
                      unreachable, with the latency
      --no-host-checks
                      skip the checks against this host (for a rule file meant
                      for another machine)
  -h, --help          this help

Exit codes: 0 valid (and, with --probe, every TCP target answered),
1 a probed target did not answer, 2 problems found.`;

interface TableRow {
  listen: string;
  protocol: string;
  rule: string;
  action: string;
  from: string;
  target: string;
}

function fromText(rule: Rule): string {
  const nets = rule.from.map((n) => n.text);
  return nets.length === 2 && nets[0] === "0.0.0.0/0" && nets[1] === "::/0"
    ? "any"
    : nets.join(", ");
}

function rows(listeners: readonly ListenerPlan[]): TableRow[] {
  return listeners.flatMap((listener) =>
    listener.bindings.map((binding) => ({
      listen: formatAddress(listener.address, listener.port) +
        (listener.everyAddress ? " (*)" : ""),
      protocol: listener.protocol,
      rule: `${binding.rule.name} (#${binding.rule.index})`,
      action: binding.rule.action,
      from: fromText(binding.rule),
      target: binding.targets.length > 0 ? binding.targets.map(formatTarget).join(", ") : "-",
    }))
  );
}

/** Renders rows under a header as an aligned text table. */
export function renderTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const all = [header, ...rows];
  // A loop, not Math.max(...rows): 131,070 rows would overflow the call stack.
  const widths = header.map((_, i) => all.reduce((max, row) => Math.max(max, row[i].length), 0));
  return all.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i])).join("  ")
  ).join("\n");
}

/** Runs `portbounce check ARGS`; resolves to the exit code. */
export async function checkCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("check", args, {
    config: { type: "string", short: "c", default: "/etc/portbounce.toml" },
    json: { type: "boolean" },
    probe: { type: "boolean" },
    "no-host-checks": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(CHECK_HELP);
    return ExitCode.ok;
  }
  let loaded = await loadRuleFile(values.config!);
  if (loaded.ok && !values["no-host-checks"]) {
    const problems = await preflight(loaded.config, loaded.listeners);
    if (problems.length > 0) loaded = { ok: false, problems };
  }
  if (!loaded.ok) {
    if (values.json) {
      console.log(
        JSON.stringify({ ok: false, problems: loaded.problems }, null, 2),
      );
    } else {
      for (const problem of loaded.problems) {
        console.error(formatProblem(problem));
      }
      const n = loaded.problems.length;
      console.error(`${values.config}: ${n} problem${n === 1 ? "" : "s"}`);
    }
    return ExitCode.usage;
  }
  const isolates = Deno.build.os === "linux"
    ? isolatesAsked(loaded.config.server.workers, navigator.hardwareConcurrency || 1)
    : 1;
  const costs = listenerCosts(loaded.listeners, loaded.config.server.status !== null, isolates);
  const costWarningList = costWarnings(costs);
  const probes = values.probe ? await probeAll(loaded.listeners) : undefined;
  const unreachable = probes?.filter((p) => p.result !== "ok" && p.result !== "skipped").length ??
    0;
  if (values.json) {
    console.log(JSON.stringify(
      {
        ok: true,
        ...(probes ? { probes } : {}),
        source: loaded.config.source,
        warnings: [
          ...loaded.warnings,
          ...costWarningList.map((message) => ({ where: loaded.config.source, message })),
        ],
        needs: {
          tcp_listeners: costs.tcp,
          udp_listeners: costs.udp,
          open_files: costs.descriptors,
          memory_bytes: costs.memoryBytes,
        },
        listeners: loaded.listeners.map((listener) => ({
          protocol: listener.protocol,
          address: listener.address,
          port: listener.port,
          every_address: listener.everyAddress,
          rules: listener.bindings.map((b) => ({
            rule: b.rule.name,
            index: b.rule.index,
            action: b.rule.action,
            from: b.rule.from.map((n) => n.text),
            target: b.targets.length > 0 ? b.targets.map(formatTarget).join(", ") : null,
          })),
        })),
      },
      null,
      2,
    ));
    return unreachable > 0 ? ExitCode.runtime : ExitCode.ok;
  }
  for (const warning of loaded.warnings) {
    console.error(`warning: ${formatProblem(warning)}`);
  }
  for (const warning of costWarningList) console.error(`warning: ${values.config}: ${warning}`);
  console.log(renderTable(
    ["LISTEN", "PROTO", "RULE", "ACTION", "FROM", "TARGET"],
    rows(loaded.listeners).map((r) => [r.listen, r.protocol, r.rule, r.action, r.from, r.target]),
  ));
  console.log(
    `\n${values.config}: OK, ${countOf(loaded.config.rules.length, "rule")}, ${
      countOf(loaded.listeners.length, "listener")
    }\nneeds ${costs.descriptors} open files before any session (2 more per TCP session, 1 per ` +
      `UDP flow) and about ${Math.ceil(costs.memoryBytes / 1_048_576)} MiB ` +
      `(${costs.tcp} TCP listeners at ~8 KiB${
        isolates > 1 ? ` in each of ${isolates} isolates` : ""
      }, ` +
      `${costs.udp} UDP at ~63 KiB)`,
  );
  if (!probes) return ExitCode.ok;
  console.log(
    "\n" + renderTable(
      ["RULE", "TARGET", "RESULT", "LATENCY", "DETAIL"],
      probes.map((p) => [
        p.rule,
        p.target,
        p.result,
        p.latencyMs === null ? "-" : `${p.latencyMs.toFixed(1)} ms`,
        p.detail,
      ]),
    ),
  );
  console.log(
    unreachable > 0
      ? `\n${unreachable} of ${
        probes.filter((p) => p.result !== "skipped").length
      } TCP targets cannot be reached`
      : `\nevery TCP target answered`,
  );
  return unreachable > 0 ? ExitCode.runtime : ExitCode.ok;
}
