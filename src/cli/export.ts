/**
 * `portbounce export --format nftables|pf`: the rule file as router
 * configuration, for the day the permanent router takes over what the
 * transition host did in user space. Names are resolved now, and said in
 * comments; what a router cannot do is written as comments and listed on stderr.
 *
 * @module
 */
import { formatProblem } from "../config/load.ts";
import { isInterfaceName, parseClientAddress, parseIp } from "../config/network.ts";
import { buildExport, type ExportNames, exportProblems } from "../export/model.ts";
import { nftModel, renderNftables } from "../export/nftables.ts";
import { pfModel, renderPf } from "../export/pf.ts";
import { type ExportOptions, leftOutLines, notDoneLines } from "../export/text.ts";
import { hasExpired } from "../rules/expiry.ts";
import { hostFacts } from "../rules/resolve.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
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
      --skip-unsupported
                       write what a router can do, and refuse in their place
                       the rules it cannot (listed in the output and on stderr)
  -h, --help           this help

The router must forward packets (net.ipv4.ip_forward=1 and
net.ipv6.conf.all.forwarding=1 on Linux; net.inet.ip.forwarding=1 on OpenBSD).
An interface named as source is the router's own (not looked up here); host
names, and interfaces named in listen, are looked up where export runs.

Exit codes: 0 written, all of it; 2 bad rule file or usage, or a rule a router
cannot do (its location is given; nothing is written); 4 written with
--skip-unsupported, and rules were left out.`;

const FORMATS = ["nftables", "pf"] as const;

/** Runs `portbounce export ARGS`; resolves to the exit code. */
export async function exportCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("export", args, {
    format: { type: "string" },
    config: { type: "string", short: "c", default: "/etc/portbounce.toml" },
    masquerade: { type: "boolean" },
    table: { type: "string", default: "portbounce" },
    interface: { type: "string" },
    "skip-unsupported": { type: "boolean" },
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
    values.interface !== undefined && !isInterfaceName(values.interface)
  ) {
    throw new UsageError(`export: --interface: "${values.interface}" is not an interface name`);
  }
  // The rules are for the router: an interface named as source is its own, not this host's.
  const loaded = await loadRuleFile(values.config!, { sourceInterfaces: "elsewhere" });
  if (!loaded.ok) {
    for (const problem of loaded.problems) console.error(formatProblem(problem));
    return ExitCode.usage;
  }
  // A rule whose `until` has passed passes nothing in portbounce: the router leaves it out too.
  const now = Date.now();
  const ended = loaded.config.rules.filter((rule) => hasExpired(rule, now));
  const config = { ...loaded.config, rules: loaded.config.rules.filter((r) => !ended.includes(r)) };
  const built = buildExport(config, await exportNames(config));
  const model = format === "pf" ? pfModel(built, values.masquerade ?? false) : nftModel(built);
  const problems = exportProblems(model);
  const skip = values["skip-unsupported"] ?? false;
  if (problems.length > 0 && !skip) {
    for (const problem of problems) console.error(formatProblem(problem));
    console.error(
      `${values.config}: cannot be exported as it is; nothing was written (--skip-unsupported writes the rest)`,
    );
    return ExitCode.usage;
  }
  const options: ExportOptions = {
    source: values.config!,
    version: VERSION,
    command: ["portbounce", "export", ...args].map(shellQuote).join(" "),
    table: values.table!,
    masquerade: values.masquerade ?? false,
    interface: values.interface ?? null,
    ended: ended.map((rule) =>
      `${rule.name} (#${rule.index}): until ${new Date(rule.until!).toISOString()}`
    ),
  };
  console.log(
    (format === "nftables" ? renderNftables(model, options) : renderPf(model, options)).trimEnd(),
  );
  for (const line of notDoneLines(model)) console.error(`not done by the router: ${line}`);
  if (problems.length === 0) return ExitCode.ok;
  for (const line of leftOutLines(model)) console.error(`left out: ${line}`);
  const count = model.rules.filter((r) => r.problems.length > 0).length;
  console.error(
    `${values.config}: ${count} of ${model.rules.length} rules left out and refused at the router; the rest was written`,
  );
  return ExitCode.partial;
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
      // Only addresses a rule can name (a scoped `fe80::1%eth0` from /etc/hosts is not one).
      const found = (await lookup(name, { all: true })).map((a) => parseIp(a.address));
      hosts.set(name, [
        ...new Set(found.flatMap((ip) => "error" in ip ? [] : [ip.toString()])),
      ]);
    } catch {
      hosts.set(name, []);
    }
  }));
  return {
    hosts,
    interfaces: facts.interfaces,
    isLocal: (address) =>
      address.range() === "loopback" ||
      facts.localAddresses.has(parseClientAddress(address.toString())!.toString()),
  };
}
