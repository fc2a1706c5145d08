/**
 * The PROXY protocol header (HAProxy's PROXY protocol, versions 1 and 2)
 * that tells a target the real client and the address it reached, sent
 * before any byte of the client's. Pure.
 *
 * @module
 */
import type ipaddr from "ipaddr.js";
import type { ProxyProtocol } from "../config/types.ts";
import { parseClientAddress } from "../config/network.ts";

/** Both ends of a client's connection: who connected, and where to. */
export interface ConnectionEnds {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly listenAddress: string;
  readonly listenPort: number;
}

/** The v2 signature: `\r\n\r\n\0\r\nQUIT\n`. */
export const V2_SIGNATURE = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);

/**
 * The header for `ends`. Addresses are unmapped (`::ffff:a.b.c.d` is IPv4);
 * when the two ends differ in family, both are sent as IPv6.
 */
export function proxyHeader(version: ProxyProtocol, ends: ConnectionEnds): Uint8Array {
  let source = parseClientAddress(ends.clientAddress);
  let destination = parseClientAddress(ends.listenAddress);
  if (!source || !destination) throw new Error("PROXY header: addresses must be IP addresses");
  if (source.kind() !== destination.kind()) {
    source = source.kind() === "ipv4" ? (source as ipaddr.IPv4).toIPv4MappedAddress() : source;
    destination = destination.kind() === "ipv4"
      ? (destination as ipaddr.IPv4).toIPv4MappedAddress()
      : destination;
  }
  const v6 = source.kind() === "ipv6";
  if (version === "v1") {
    return new TextEncoder().encode(
      `PROXY ${
        v6 ? "TCP6" : "TCP4"
      } ${source.toString()} ${destination.toString()} ${ends.clientPort} ${ends.listenPort}\r\n`,
    );
  }
  const addressLength = v6 ? 16 : 4;
  const length = addressLength * 2 + 4;
  const header = new Uint8Array(16 + length);
  header.set(V2_SIGNATURE);
  header[12] = 0x21; // Version 2, command PROXY.
  header[13] = v6 ? 0x21 : 0x11; // AF_INET6 or AF_INET, over a stream.
  header[14] = length >> 8;
  header[15] = length & 0xff;
  header.set(source.toByteArray(), 16);
  header.set(destination.toByteArray(), 16 + addressLength);
  const ports = 16 + addressLength * 2;
  header[ports] = ends.clientPort >> 8;
  header[ports + 1] = ends.clientPort & 0xff;
  header[ports + 2] = ends.listenPort >> 8;
  header[ports + 3] = ends.listenPort & 0xff;
  return header;
}

/**
 * The header of a connection portbounce makes on its own behalf (a probe),
 * relaying no client: v1 `PROXY UNKNOWN`, v2 the LOCAL command. A target
 * that expects a header then takes the connection's own addresses.
 */
export function localHeader(version: ProxyProtocol): Uint8Array {
  if (version === "v1") return new TextEncoder().encode("PROXY UNKNOWN\r\n");
  const header = new Uint8Array(16);
  header.set(V2_SIGNATURE);
  header[12] = 0x20; // Version 2, command LOCAL.
  header[13] = 0x00; // AF_UNSPEC, no addresses (length 0).
  return header;
}
