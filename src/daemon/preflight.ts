/**
 * What `check` tries beyond the rule file itself, so that it fails where
 * `run` would: listen addresses this host does not have, and log files that
 * cannot be opened. Binds nothing and leaves no file behind.
 *
 * @module
 */
import { dirname } from "node:path";
import type { ConfigProblem } from "../config/load.ts";
import { parseClientAddress } from "../config/network.ts";
import { type Config, ruleLabel, ruleWhere } from "../config/types.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { ListenerPlan } from "../rules/plan.ts";
import { localAddresses } from "../rules/resolve.ts";

/** Problems `run` would meet binding listeners and opening log files. */
export async function preflight(
  config: Config,
  listeners: readonly ListenerPlan[],
): Promise<ConfigProblem[]> {
  const problems: ConfigProblem[] = [];
  const local = localAddresses();
  const reported = new Set<string>();
  for (const listener of listeners) {
    const addresses = [listener.address, ...listener.bindings.map((b) => b.only)];
    for (const address of addresses) {
      if (address === null || address === "::" || address === "0.0.0.0") continue;
      const ip = parseClientAddress(address);
      if (!ip || ip.range() === "loopback" || local.has(ip.toString()) || reported.has(address)) {
        continue;
      }
      reported.add(address);
      const rule = listener.bindings.find((b) => (b.only ?? listener.address) === address)!.rule;
      problems.push({
        where: ruleWhere(config.source, rule, "listen"),
        message: `${ruleLabel(rule)}: listen: ${
          formatAddress(address, listener.port)
        }: ${address} is not an address of this host, so it cannot be bound (add it to an interface first)`,
      });
    }
  }
  for (const rule of config.rules) {
    if (rule.action !== "pass" || rule.source?.kind !== "ip") continue;
    const ip = parseClientAddress(rule.source.address)!;
    if (ip.range() === "loopback" || local.has(ip.toString())) continue;
    problems.push({
      where: ruleWhere(config.source, rule, "source"),
      message: `${
        ruleLabel(rule)
      }: source: ${rule.source.address} is not an address of this host, so connections cannot leave from it`,
    });
  }
  for (const output of config.server.log) {
    if (output.kind === "syslog") {
      const info = await Deno.stat(output.path).catch(() => null);
      if (!info || info.isFile || info.isDirectory) {
        problems.push({
          where: config.source,
          message: `[server]: log: syslog socket ${output.path} ${
            info ? "is not a socket" : "does not exist (is a syslog daemon running?)"
          }`,
        });
      }
      continue;
    }
    if (output.kind !== "file") continue;
    const why = await cannotWrite(output.path);
    if (why) {
      problems.push({
        where: config.source,
        message: `[server]: log: cannot open log file "${output.path}": ${why}`,
      });
    }
  }
  return problems;
}

/** Why `path` cannot be appended to (or created), or null. */
async function cannotWrite(path: string): Promise<string | null> {
  try {
    const info = await Deno.stat(path).catch((error) => {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    });
    if (info) {
      if (info.isDirectory) return "it is a directory";
      (await Deno.open(path, { append: true })).close();
      return null;
    }
    const dir = dirname(path);
    const dirInfo = await Deno.stat(dir).catch(() => null);
    if (!dirInfo?.isDirectory) return `no directory ${dir}`;
    // Try it: create a file beside it, then remove it.
    const probe = `${dir}/.portbounce-check-${crypto.randomUUID()}`;
    (await Deno.open(probe, { createNew: true, write: true })).close();
    await Deno.remove(probe);
    return null;
  } catch (error) {
    return error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (error as Error).message.replace(/ \(os error \d+\)$/, "");
  }
}
