/**
 * `portbounce export --format nftables|pf`: the rule file as router
 * configuration, for the day the permanent router takes over what the
 * transition host did in user space. Names are resolved now, and said in
 * comments; what a router cannot do is written as comments and listed on stderr.
 *
 * @module
 */
import { formatProblem } from "../config/load.ts";
import { parseClientAddress } from "../config/network.ts";
import { buildExport, type ExportNames } from "../export/model.ts";
import { renderNftables } from "../export/nftables.ts";
import { pfModel, renderPf } from "../export/pf.ts";
import { type ExportOptions, notDoneLines } from "../export/text.ts";
import { hostFacts } from "../rules/resolve.ts";
import { ExitCode } from "../server/exit_codes.ts";
import { loadRuleFile } from "../server/rule_file.ts";
import { VERSION } from "../version.ts";
import { choice, parseCommandArgs, shellQuote, UsageError } from "./args.ts";

/** Help for `portbounce export`. */
export const EXPORT_HELP =
  `Usage: portbounce export --format nftables|pf [-c FILE] [options] > rules

Writes what the rules of FILE (default /etc/portbounce.toml) do as router
configuration: an nftables table (Linux, loaded with nft -f; loading it again
replaces it) or pf.conf lines (OpenBSD). Pass and block rules in the same
first-match order, deny by default, port ranges mapped 1:1, client networks,
IPv4 and IPv6, logging and the limits the router can express. Host names are
resolved now (a comment names them). What a router cannot do (timeouts, health
checks, PROXY headers, failover) is written as comments and listed on stderr.

Options:
      --format FMT     nftables or pf (required)
  -c, --config FILE    rule file (default /etc/portbounce.toml)
      --masquerade     also source-NAT toward the targets (they see the router's
                       address; for targets that do not route back through it)
      --table NAME     the nftables table (default portbounce)
      --interface IF   only packets arriving on IF
  -h, --help           this help

Exit codes: 0 written, 2 bad rule file or usage, or a rule a router cannot do
at all (its location is given; nothing is written).`;

const FORMATS = ["nftables", "pf"] as const;

/** Runs `portbounce export ARGS`; resolves to the exit code. */
export async function exportCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("export", args, {
    format: { type: "string" },
    config: { type: "string", short: "c", default: "/etc/portbounce.toml" },
    masquerade: { type: "boolean" },
    table: { type: "string", default: "portbounce" },
    interface: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(EXPORT_HELP);
    return ExitCode.ok;
  }
  const format = choice("--format", values.format, FORMATS);
  if (format === undefined) {
    throw new UsageError("export: --format nftables or --format pf is required");
  }
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(values.table!)) {
    throw new UsageError(
      `export: --table: "${values.table}" is not a table name (letters, digits, _ and -)`,
    );
  }
  if (
    values.interface !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$/.test(values.interface)
  ) {
    throw new UsageError(`export: --interface: "${values.interface}" is not an interface name`);
  }
  const loaded = await loadRuleFile(values.config!);
  if (!loaded.ok) {
    for (const problem of loaded.problems) console.error(formatProblem(problem));
    return ExitCode.usage;
  }
  const model = buildExport(loaded.config, await exportNames(loaded.config));
  if (!model.ok) {
    for (const problem of model.problems) console.error(formatProblem(problem));
    console.error(`${values.config}: cannot be exported as it is; nothing was written`);
    return ExitCode.usage;
  }
  const options: ExportOptions = {
    source: values.config!,
    version: VERSION,
    command: ["portbounce", "export", ...args].map(shellQuote).join(" "),
    table: values.table!,
    masquerade: values.masquerade ?? false,
    interface: values.interface ?? null,
  };
  const exported = format === "pf" ? pfModel(model) : model;
  console.log(
    (format === "nftables" ? renderNftables(exported, options) : renderPf(exported, options))
      .trimEnd(),
  );
  for (const line of notDoneLines(exported)) console.error(`not done by the router: ${line}`);
  return ExitCode.ok;
}

/** Host names of the rules resolved now; this host's interfaces and addresses. */
async function exportNames(config: import("../config/types.ts").Config): Promise<ExportNames> {
  const facts = hostFacts();
  const names = new Set<string>();
  for (const rule of config.rules) {
    for (const endpoint of rule.listen) {
      if (endpoint.host.kind === "name" && !facts.interfaces.has(endpoint.host.name)) {
        names.add(endpoint.host.name);
      }
    }
    if (rule.action === "pass") {
      for (const target of rule.bounceTo) {
        if (target.host.kind === "name") names.add(target.host.name);
      }
    }
  }
  const { lookup } = await import("node:dns/promises");
  const hosts = new Map<string, string[]>();
  await Promise.all([...names].map(async (name) => {
    try {
      hosts.set(name, [...new Set((await lookup(name, { all: true })).map((a) => a.address))]);
    } catch {
      hosts.set(name, []);
    }
  }));
  return {
    hosts,
    interfaces: new Set(facts.interfaces.keys()),
    isLocal: (address) =>
      address.range() === "loopback" ||
      facts.localAddresses.has(parseClientAddress(address.toString())!.toString()),
  };
}
