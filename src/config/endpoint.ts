/**
 * Listen and target endpoints as written in rule files: `192.0.2.1:80`,
 * `[2001:db8::1]:80`, `*:80`, `eth1:80`, `host.example:http`,
 * `127.0.0.1:8000-8010`; targets may leave out the port.
 *
 * @module
 */
import { parseIp } from "./network.ts";
import type { ServiceTable } from "./services.ts";

/** An inclusive range of ports; a single port has `first === last`. */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

/** Where a listener binds or a target lives, before any name is resolved. */
export type Host =
  /** A literal address (canonical text, no brackets). */
  | { readonly kind: "ip"; readonly address: string; readonly family: 4 | 6 }
  /** `*`: every address of both families. */
  | { readonly kind: "any" }
  /** A network interface name or a host name; which one is decided when resolving. */
  | { readonly kind: "name"; readonly name: string };

/** A host that is one address or one name: anything but `*`. */
export type NamedHost = Exclude<Host, { readonly kind: "any" }>;

/** A parsed `listen` value. */
export interface ListenEndpoint {
  readonly text: string;
  readonly host: Host;
  readonly ports: PortRange;
}

/** A parsed `bounce_to` value; `ports` is null when the listen port is kept. */
export interface TargetEndpoint {
  readonly text: string;
  readonly host: NamedHost;
  readonly ports: PortRange | null;
}

/** Protocol whose service names apply to a port. */
export type Protocol = "tcp" | "udp";

const NAME = /^[A-Za-z0-9]([A-Za-z0-9_.@-]{0,252})$/;

/** Number of ports in a range. */
export function rangeSize(range: PortRange): number {
  return range.last - range.first + 1;
}

/** Formats an address and port, bracketing IPv6: `[::1]:80`. */
export function formatAddress(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Parses a `listen` value. Port 0 asks the system for a free port. */
export function parseListen(
  text: string,
  protocols: readonly Protocol[],
  services: ServiceTable,
): ListenEndpoint | { error: string } {
  const split = splitHostPort(text);
  if ("error" in split) return split;
  if (split.port === undefined) {
    return {
      error: `"${text}" has no port; expected ADDRESS:PORT, e.g. "0.0.0.0:80"`,
    };
  }
  const host = split.host === "*" ? { kind: "any" as const } : parseHost(split.host, text);
  if ("error" in host) return host;
  const ports = parsePorts(split.port, text, protocols, services, true);
  if ("error" in ports) return ports;
  return { text, host, ports };
}

/** Parses a `bounce_to` value; the port may be left out. */
export function parseTarget(
  text: string,
  protocols: readonly Protocol[],
  services: ServiceTable,
): TargetEndpoint | { error: string } {
  const split = splitHostPort(text);
  if ("error" in split) return split;
  if (split.host === "*") {
    return { error: `"${text}": a target must be one address, not "*"` };
  }
  const host = parseHost(split.host, text);
  if ("error" in host) return host;
  if (host.kind === "ip" && isUnspecified(host.address)) {
    return { error: `"${text}": ${host.address} is not a target address` };
  }
  if (split.port === undefined) return { text, host, ports: null };
  const ports = parsePorts(split.port, text, protocols, services, false);
  if ("error" in ports) return ports;
  return { text, host, ports };
}

function isUnspecified(address: string): boolean {
  return address === "0.0.0.0" || address === "::";
}

function splitHostPort(
  text: string,
): { host: string; port?: string } | { error: string } {
  if (text.trim() !== text || text === "") {
    return {
      error: `${JSON.stringify(text)} is not an address; expected ADDRESS:PORT`,
    };
  }
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) return { error: `"${text}": "[" without a closing "]"` };
    const host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest === "") return { host: `[${host}]` };
    if (!rest.startsWith(":")) {
      return { error: `"${text}": expected ":PORT" after "]", got "${rest}"` };
    }
    return { host: `[${host}]`, port: rest.slice(1) };
  }
  const colons = text.split(":").length - 1;
  if (colons > 1) {
    return {
      error: `"${text}": an IPv6 address needs brackets, e.g. "[2001:db8::1]:80"`,
    };
  }
  if (colons === 0) return { host: text };
  const at = text.lastIndexOf(":");
  return { host: text.slice(0, at), port: text.slice(at + 1) };
}

function parseHost(
  hostText: string,
  whole: string,
): NamedHost | { error: string } {
  if (hostText.startsWith("[")) {
    const inner = hostText.slice(1, -1);
    if (!inner.includes(":")) {
      return { error: `"${whole}": brackets are for IPv6 addresses` };
    }
    const ip = parseIp(inner);
    if ("error" in ip) return { error: `"${whole}": ${ip.error}` };
    // A mapped address in brackets is still a v6 socket address; keep the text as given.
    return ip.kind() === "ipv6"
      ? { kind: "ip", address: ip.toString(), family: 6 }
      : { kind: "ip", address: inner.toLowerCase(), family: 6 };
  }
  if (hostText === "") {
    return { error: `"${whole}" has no address before the port` };
  }
  if (/^[\d.]+$/.test(hostText)) {
    const ip = parseIp(hostText);
    if ("error" in ip) return { error: `"${whole}": ${ip.error}` };
    return { kind: "ip", address: ip.toString(), family: 4 };
  }
  if (!NAME.test(hostText) || hostText.includes("..")) {
    return {
      error:
        `"${whole}": "${hostText}" is neither an IP address, an interface name nor a host name`,
    };
  }
  return { kind: "name", name: hostText };
}

function parsePorts(
  text: string,
  whole: string,
  protocols: readonly Protocol[],
  services: ServiceTable,
  allowZero: boolean,
): PortRange | { error: string } {
  const range = /^(\d+)-(\d+)$/.exec(text);
  if (range) {
    const first = Number(range[1]);
    const last = Number(range[2]);
    if (!validPort(first) || !validPort(last) || first === 0) {
      return { error: `"${whole}": ports in a range must be 1-65535` };
    }
    if (first > last) {
      return { error: `"${whole}": range ${text} runs backwards` };
    }
    return { first, last };
  }
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    if (!validPort(port) || (port === 0 && !allowZero)) {
      return { error: `"${whole}": port ${text} is out of range (1-65535)` };
    }
    return { first: port, last: port };
  }
  if (text === "") return { error: `"${whole}": the port after ":" is empty` };
  const entry = services.get(text.toLowerCase());
  if (!entry) return { error: `"${whole}": unknown service name "${text}"` };
  const ports = new Set(protocols.map((p) => entry[p]));
  if (ports.has(undefined)) {
    const missing = protocols.filter((p) => entry[p] === undefined).join(", ");
    return { error: `"${whole}": service "${text}" has no ${missing} port` };
  }
  if (ports.size > 1) {
    return {
      error: `"${whole}": service "${text}" has different tcp and udp ports`,
    };
  }
  const port = [...ports][0] as number;
  return { first: port, last: port };
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= 65535;
}
