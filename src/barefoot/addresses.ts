/**
 * Barefoot's addresses and ports (`from:`, `to:`, `bounce to:`) read into
 * portbounce's forms: client networks, listen addresses with port ranges, one
 * target. Pure.
 *
 * @module
 */
import type { ServiceTable } from "../config/services.ts";
import { parseNetwork } from "../config/network.ts";
import { BarefootSyntaxError, type Statement } from "./parse.ts";
import { NotTranslatable } from "./notes.ts";

/** One listen address with a port range: `203.0.113.10` ports 80..80. */
export interface ListenEntry {
  /** `*`, `0.0.0.0`, an IPv4 address, `[IPv6]`, or a host or interface name. */
  readonly host: string;
  readonly first: number;
  readonly last: number;
}

/** The rule file's text for a listen entry: `203.0.113.10:80`, `*:8000-8009`. */
export function listenText(entry: ListenEntry): string {
  const ports = entry.first === entry.last ? `${entry.first}` : `${entry.first}-${entry.last}`;
  return `${entry.host}:${ports}`;
}

/** A `bounce to:` target with the address family, when the address is literal. */
export interface TargetAddress {
  readonly text: string;
  readonly family: 4 | 6 | null;
}

type PortRange = { first: number; last: number };

/** Splits `port=80`, `port>=1024` and `port = 80` alike into words. */
function words(values: readonly string[]): string[] {
  return values.flatMap((value) => value.split(/(!=|>=|<=|=|<|>)/).filter((w) => w !== ""));
}

function portNumber(word: string, line: number, services: ServiceTable): number {
  if (/^\d+$/.test(word)) {
    const n = Number(word);
    if (n < 1 || n > 65535) throw new BarefootSyntaxError(line, `port ${word} is out of range`);
    return n;
  }
  const entry = services.get(word.toLowerCase());
  const port = entry?.tcp ?? entry?.udp;
  if (port === undefined) throw new BarefootSyntaxError(line, `unknown service name "${word}"`);
  return port;
}

const OPERATORS: Record<string, string> = {
  "=": "eq",
  eq: "eq",
  "!=": "ne",
  ne: "ne",
  ">=": "ge",
  ge: "ge",
  "<=": "le",
  le: "le",
  ">": "gt",
  gt: "gt",
  "<": "lt",
  lt: "lt",
};

/** `port = 80`, `port eq http`, `port 8000-8010`, `port ge 1024`, ... as ranges. */
function parsePorts(spec: readonly string[], line: number, services: ServiceTable): PortRange[] {
  const [first, ...rest] = spec;
  const operator = OPERATORS[first?.toLowerCase() ?? ""];
  const valueWords = operator ? rest : spec;
  const value = valueWords.join("");
  if (value === "") throw new BarefootSyntaxError(line, `"port" without a port`);
  const range = /^(\w+)-(\w+)$/.exec(value);
  if (range && !operator) {
    const [a, b] = [portNumber(range[1], line, services), portNumber(range[2], line, services)];
    if (a > b) throw new BarefootSyntaxError(line, `port range ${value} runs backwards`);
    return [{ first: a, last: b }];
  }
  const n = portNumber(value, line, services);
  switch (operator ?? "eq") {
    case "eq":
      return [{ first: n, last: n }];
    case "ne":
      return [{ first: 1, last: n - 1 }, { first: n + 1, last: 65535 }].filter((r) =>
        r.first <= r.last
      );
    case "ge":
      return [{ first: n, last: 65535 }];
    case "gt":
      return n < 65535 ? [{ first: n + 1, last: 65535 }] : [];
    case "le":
      return [{ first: 1, last: n }];
    default: // lt
      return n > 1 ? [{ first: 1, last: n - 1 }] : [];
  }
}

/** A short label for a port spec, for rule names: `http`, `8000-8009`, `not-80`, `from-1024`. */
function portLabel(spec: readonly string[]): string {
  const [first, ...rest] = spec;
  const operator = OPERATORS[first?.toLowerCase() ?? ""];
  const value = (operator ? rest : spec).join("").toLowerCase();
  const prefix: Record<string, string> = {
    ne: "not-",
    ge: "from-",
    gt: "above-",
    le: "to-",
    lt: "below-",
  };
  return `${prefix[operator ?? "eq"] ?? ""}${value}`;
}

/** Splits `ADDR [port ...]` into the address and the port words. */
export function addressAndPorts(
  statement: Statement,
): { address: string; ports: string[] | null } {
  const all = words(statement.values);
  if (all.length === 0) {
    throw new BarefootSyntaxError(statement.line, `${statement.keyword}: no address`);
  }
  const [address, ...rest] = all;
  if (rest.length === 0) return { address, ports: null };
  if (rest[0].toLowerCase() !== "port") {
    throw new BarefootSyntaxError(
      statement.line,
      `${statement.keyword}: expected "port" after the address, got "${rest[0]}"`,
    );
  }
  return { address, ports: rest.slice(1) };
}

/** A dotted mask (255.255.0.0) as a prefix length, or null if it is not contiguous. */
function maskPrefix(mask: string): number | null {
  const parts = mask.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    return null;
  }
  const bits = parts.map((p) => p.toString(2).padStart(8, "0")).join("");
  return /^1*0*$/.test(bits) ? bits.indexOf("0") === -1 ? 32 : bits.indexOf("0") : null;
}

/** `from:` as client networks; null means any client. */
export function clientNetworks(statement: Statement): string[] | null {
  const { address, ports } = addressAndPorts(statement);
  if (ports !== null) {
    throw new NotTranslatable(
      `from: ${statement.values.join(" ")}: portbounce does not match client ports`,
    );
  }
  if (address === "0/0") return null;
  let text = address;
  const slash = address.indexOf("/");
  if (slash !== -1 && address.slice(slash + 1).includes(".")) {
    const prefix = maskPrefix(address.slice(slash + 1));
    if (prefix === null) {
      throw new BarefootSyntaxError(statement.line, `from: "${address}" has a non-contiguous mask`);
    }
    text = `${address.slice(0, slash)}/${prefix}`;
  }
  const network = parseNetwork(text);
  if ("error" in network) {
    if (/^[A-Za-z.]/.test(address)) {
      throw new NotTranslatable(
        `from: ${address}: portbounce matches clients by address, not by host or domain name`,
      );
    }
    throw new BarefootSyntaxError(statement.line, `from: ${network.error}`);
  }
  return [network.text];
}

/** `to:` as listen entries (one per port range) and a label for the rule's name. */
export function listenAddresses(
  statement: Statement,
  services: ServiceTable,
): { entries: ListenEntry[]; label: string } {
  const { address, ports } = addressAndPorts(statement);
  if (ports === null) {
    throw new NotTranslatable(`to: ${address} names no port; portbounce listens on given ports`);
  }
  let host = address;
  if (address === "0/0") host = "*";
  else if (address.includes("/")) {
    const [base, mask] = address.split("/");
    const full = base.includes(":") ? "128" : "32";
    if (mask === full || (base.includes(".") && maskPrefix(mask) === 32)) host = base;
    else if (base === "0.0.0.0" && (mask === "0" || mask === "0.0.0.0")) host = "0.0.0.0";
    else throw new NotTranslatable(`to: ${address}: portbounce listens on addresses, not networks`);
  }
  if (host.includes(":")) host = `[${host}]`;
  const ranges = parsePorts(ports, statement.line, services);
  if (ranges.length === 0) {
    throw new NotTranslatable(`to: ${statement.values.join(" ")} matches no port`);
  }
  const hostLabel = host === "*" ? "any" : host.replace(/^\[|\]$/g, "").replaceAll(":", "_");
  return {
    entries: ranges.map((r) => ({ host, ...r })),
    label: `${hostLabel}-${portLabel(ports)}`,
  };
}

/** `bounce to:` as a target; Barefoot takes one port (`port = N`) or none. */
export function target(statement: Statement, services: ServiceTable): TargetAddress {
  const { address, ports } = addressAndPorts(statement);
  const family = address.includes(":") ? 6 : /^[\d.]+$/.test(address) ? 4 : null;
  const host = family === 6 ? `[${address}]` : address;
  if (ports === null) return { text: host, family };
  const ranges = parsePorts(ports, statement.line, services);
  if (ranges.length !== 1 || ranges[0].first !== ranges[0].last) {
    throw new BarefootSyntaxError(statement.line, `bounce to: takes one port ("port = N")`);
  }
  return { text: `${host}:${ranges[0].first}`, family };
}

/** Whether two listen hosts can be the same socket address (wildcards cover literals). */
function hostsOverlap(a: string, b: string): boolean {
  if (a === b || a === "*" || b === "*") return true;
  const isV4 = (h: string) => /^[\d.]+$/.test(h);
  const isV6 = (h: string) => h.startsWith("[");
  if (!(isV4(a) || isV6(a)) || !(isV4(b) || isV6(b))) return true; // a name: may be anything
  if (a === "0.0.0.0") return isV4(b);
  if (b === "0.0.0.0") return isV4(a);
  if (a === "[::]" || b === "[::]") return true; // dual-stack wildcard
  return false;
}

/** The more specific of two overlapping hosts. */
function narrower(a: string, b: string): string {
  const rank = (h: string) => h === "*" ? 0 : h === "0.0.0.0" || h === "[::]" ? 1 : 2;
  return rank(b) > rank(a) ? b : a;
}

/**
 * Where entries `a` and `b` share addresses and ports: the listen entries a
 * block rule needs to stand in front of a pass rule.
 */
export function intersect(a: ListenEntry, b: ListenEntry): ListenEntry | null {
  if (!hostsOverlap(a.host, b.host)) return null;
  const first = Math.max(a.first, b.first);
  const last = Math.min(a.last, b.last);
  return first <= last ? { host: narrower(a.host, b.host), first, last } : null;
}

/** Merges entries on one host whose ranges touch or overlap; order by host, then port. */
export function mergeEntries(entries: readonly ListenEntry[]): ListenEntry[] {
  const byHost = new Map<string, PortRange[]>();
  for (const e of entries) {
    const ranges = byHost.get(e.host) ?? [];
    ranges.push({ first: e.first, last: e.last });
    byHost.set(e.host, ranges);
  }
  const merged: ListenEntry[] = [];
  for (const [host, ranges] of byHost) {
    ranges.sort((x, y) => x.first - y.first);
    let current = { ...ranges[0] };
    for (const r of ranges.slice(1)) {
      if (r.first <= current.last + 1) current.last = Math.max(current.last, r.last);
      else {
        merged.push({ host, ...current });
        current = { ...r };
      }
    }
    merged.push({ host, ...current });
  }
  return merged;
}
