/**
 * Client networks (`from = [...]`) and client addresses: parsing, IPv4-mapped
 * IPv6 normalisation and containment, on top of `ipaddr.js`.
 *
 * @module
 */
import ipaddr from "ipaddr.js";

/** A parsed IP address of either family. */
export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;

/** A client network such as `198.51.100.0/24` or `2001:db8::/32`. */
export interface Network {
  /** Canonical text, e.g. `198.51.100.0/24`. */
  readonly text: string;
  readonly address: IpAddress;
  readonly prefix: number;
}

/** Networks that together contain every client of both families. */
export const ANY_NETWORKS: readonly Network[] = [
  network(ipaddr.parse("0.0.0.0"), 0),
  network(ipaddr.parse("::"), 0),
];

function network(address: IpAddress, prefix: number): Network {
  return { text: `${address.toString()}/${prefix}`, address, prefix };
}

/**
 * Whether `text` can be a network interface name (Linux allows 15 bytes;
 * these characters are safe in nft and pf.conf as they are).
 */
export function isInterfaceName(text: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$/.test(text);
}

/**
 * Parses an IPv4 address in strict dotted-quad form (no leading zeros, no
 * octal or hex parts) or an IPv6 address (no zone id). IPv4-mapped IPv6
 * addresses become IPv4, as clients are matched and logged as IPv4.
 */
export function parseIp(text: string): IpAddress | { error: string } {
  if (text.includes("%")) {
    return {
      error: `"${text}" has a zone id; zone ids are not supported here`,
    };
  }
  if (text.includes(":")) {
    if (!ipaddr.IPv6.isValid(text)) {
      return { error: `"${text}" is not a valid IPv6 address` };
    }
    return unmap(ipaddr.IPv6.parse(text));
  }
  if (/^[\d.]+$/.test(text)) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(text)) {
      return {
        error:
          `"${text}" is not a valid IPv4 address (four decimal numbers 0-255, no leading zeros)`,
      };
    }
    return ipaddr.IPv4.parse(text);
  }
  return { error: `"${text}" is not an IP address` };
}

/** Turns `::ffff:a.b.c.d` into `a.b.c.d`; other addresses are returned as they are. */
export function unmap(address: IpAddress): IpAddress {
  if (
    address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress()
  ) {
    return (address as ipaddr.IPv6).toIPv4Address();
  }
  return address;
}

/**
 * Parses a network in CIDR notation, or a single address (a /32 or /128).
 * Host bits set below the prefix are an error: `10.1.2.3/8` is more likely a
 * typo than a wish for `10.0.0.0/8`, and a firewall rule must not guess.
 */
export function parseNetwork(text: string): Network | { error: string } {
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? undefined : text.slice(slash + 1);
  const raw = text.includes(":") && addressText.includes(":")
    ? parseRawIpv6(addressText)
    : parseIp(addressText);
  if ("error" in raw) return { error: `client network ${raw.error}` };
  const max = raw.kind() === "ipv4" ? 32 : 128;
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
      return {
        error: `"${text}": prefix length must be a number from 0 to ${max}`,
      };
    }
    prefix = Number(prefixText);
  }
  let address: IpAddress = raw;
  // A mapped IPv6 network (::ffff:0:0/96 and longer) matches the IPv4 clients it maps.
  if (
    raw.kind() === "ipv6" && prefix >= 96 &&
    (raw as ipaddr.IPv6).isIPv4MappedAddress()
  ) {
    address = (raw as ipaddr.IPv6).toIPv4Address();
    prefix -= 96;
  }
  const base = maskedAddress(address, prefix);
  if (base.toString() !== address.toString()) {
    return {
      error: `"${text}" has host bits set below /${prefix}; did you mean "${
        network(base, prefix).text
      }"?`,
    };
  }
  return network(address, prefix);
}

function parseRawIpv6(text: string): ipaddr.IPv6 | { error: string } {
  if (text.includes("%")) {
    return {
      error: `"${text}" has a zone id; zone ids are not supported here`,
    };
  }
  if (!ipaddr.IPv6.isValid(text)) {
    return { error: `"${text}" is not a valid IPv6 address` };
  }
  return ipaddr.IPv6.parse(text);
}

function maskedAddress(address: IpAddress, prefix: number): IpAddress {
  const bytes = address.toByteArray();
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  }
  return ipaddr.fromByteArray(bytes);
}

/** Whether `client` (already unmapped) lies in `net`. */
export function contains(net: Network, client: IpAddress): boolean {
  if (net.address.kind() !== client.kind()) return false;
  return client.match(net.address, net.prefix);
}

/**
 * Addresses sockets reported lately. Clients come back, and every session
 * needs its client's (and its listen address's) parsed form and text: parsing
 * and formatting each time was about 7% of the time per new connection.
 */
const clientAddresses = new Map<string, IpAddress | null>();
const CLIENT_ADDRESSES_KEPT = 4_096;

/**
 * Parses the address a socket reports for a client: unmapped, never throws on
 * odd input. The result is shared between callers and must not be changed.
 */
export function parseClientAddress(hostname: string): IpAddress | null {
  const known = clientAddresses.get(hostname);
  if (known !== undefined) return known;
  const parsed = parseIp(hostname.replace(/%.*$/, ""));
  const address = "error" in parsed ? null : withFixedText(parsed);
  if (clientAddresses.size >= CLIENT_ADDRESSES_KEPT) clientAddresses.clear();
  clientAddresses.set(hostname, address);
  return address;
}

/** Computes the address's text once: `toString()` of a shared address is called per session. */
function withFixedText(address: IpAddress): IpAddress {
  const text = address.toString();
  Object.defineProperty(address, "toString", { value: () => text });
  return address;
}
