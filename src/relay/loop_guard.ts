/**
 * The runtime half of the self-bounce guard: whether a connection portbounce
 * just opened toward a target reached one of its own TCP listeners (the
 * static half is in the rule checks). Every isolate that relays asks it of
 * its own listeners, which are the same in all of them.
 *
 * @module
 */
import { parseClientAddress } from "../config/network.ts";
import type { RelayListener } from "./host.ts";

/** Whether a connection from `local` to `remote` reached one of `listeners` (TCP ones). */
export function reachesOwnListener(
  listeners: Iterable<RelayListener>,
  remote: Deno.NetAddr,
  local: Deno.NetAddr,
): boolean {
  const ip = parseClientAddress(remote.hostname);
  if (!ip) return false;
  // This host's own address: loopback, or the connection's own source address.
  const toThisHost = ip.range() === "loopback" ||
    parseClientAddress(local.hostname)?.toString() === ip.toString();
  for (const listener of listeners) {
    if (listener.protocol !== "tcp" || listener.address.port !== remote.port) continue;
    const bound = listener.address.hostname;
    if (bound === "::" || bound === "0.0.0.0") {
      if (toThisHost && (bound === "::" || ip.kind() === "ipv4")) return true;
    } else if (parseClientAddress(bound)?.toString() === ip.toString()) return true;
  }
  return false;
}
