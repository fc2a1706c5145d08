/**
 * Resolves listen names when rules are loaded: a network interface's
 * addresses (Barefoot's `external: eth1`) or a host name's addresses.
 *
 * @module
 */
import { parseClientAddress } from "../config/network.ts";
import type { HostFacts, ResolvedNames } from "./plan.ts";

/** Looks up every name: interface names first, then host names through the system resolver. */
export async function resolveNames(
  names: readonly string[],
): Promise<ResolvedNames> {
  const resolved = new Map<
    string,
    { addresses: string[] } | { error: string }
  >();
  if (names.length === 0) return resolved;
  const interfaces = interfaceAddresses();
  await Promise.all(names.map(async (name) => {
    const ofInterface = interfaces.get(name);
    if (ofInterface) {
      resolved.set(name, { addresses: ofInterface });
      return;
    }
    try {
      const found = await (await import("node:dns/promises")).lookup(name, { all: true });
      resolved.set(name, {
        addresses: [...new Set(found.map((entry) => entry.address))],
      });
    } catch (error) {
      const code = (error as { code?: string }).code;
      resolved.set(name, {
        error: `"${name}" is neither a network interface here nor a resolvable host name${
          code ? ` (${code})` : ""
        }`,
      });
    }
  }));
  return resolved;
}

/** This host's addresses (those of its interfaces), canonical text. */
export function localAddresses(): Set<string> {
  return hostFacts().localAddresses as Set<string>;
}

/** What planning needs to know of this host: its addresses, by interface and in all. */
export function hostFacts(): HostFacts {
  const interfaces = interfaceAddresses();
  const localAddresses = new Set<string>();
  for (const addresses of interfaces.values()) {
    for (const address of addresses) {
      const ip = parseClientAddress(address);
      if (ip) localAddresses.add(ip.toString());
    }
  }
  return { localAddresses, interfaces };
}

/** Addresses per interface name, leaving out IPv6 link-local ones (they need a zone). */
function interfaceAddresses(): Map<string, string[]> {
  const byName = new Map<string, string[]>();
  let list: Deno.NetworkInterfaceInfo[];
  try {
    list = Deno.networkInterfaces();
  } catch {
    return byName; // Without sys permission only host names can be used.
  }
  for (const entry of list) {
    if (
      entry.family === "IPv6" && entry.address.toLowerCase().startsWith("fe80:")
    ) continue;
    const addresses = byName.get(entry.name) ?? [];
    if (!addresses.includes(entry.address)) addresses.push(entry.address);
    byName.set(entry.name, addresses);
  }
  return byName;
}
