/**
 * How relays name a socket peer in logs and counters: `ip:port`, IPv6 in
 * brackets, IPv4-mapped addresses as IPv4 (docs/reference.md, "Matching": clients are matched and logged as IPv4).
 *
 * @module
 */
import { formatAddress } from "../config/endpoint.ts";
import { type IpAddress, parseClientAddress } from "../config/network.ts";

/** `ip:port` of `address`; pass `parsed` when the caller has already parsed it. */
export function peerText(
  address: Deno.NetAddr,
  parsed: IpAddress | null = parseClientAddress(address.hostname),
): string {
  return formatAddress(parsed?.toString() ?? address.hostname, address.port);
}
