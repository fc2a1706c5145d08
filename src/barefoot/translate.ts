/**
 * Translating a parsed barefootd.conf into a commented portbounce rule file.
 * Rule order is kept (first match wins in both). Whatever has no equivalent
 * becomes a `# not translated: ...` comment and a warning, never silently
 * dropped; a rule whose clients or listen address cannot be expressed is
 * kept as a comment as a whole rather than translated more loosely. Pure.
 *
 * @module
 */
import type { ServiceTable } from "../config/services.ts";
import { parseNetwork } from "../config/network.ts";
import { type BarefootFile, BarefootSyntaxError, type Block, type Statement } from "./parse.ts";

/** A warning about something not (fully) translated, at a line of the input. */
export interface ImportWarning {
  readonly line: number;
  readonly message: string;
}

/** The rule file and what could not be carried over. */
export interface Translation {
  readonly toml: string;
  readonly warnings: readonly ImportWarning[];
}

/** A rule that must stay a comment, and why. */
class NotTranslatable extends Error {}

type PortRange = { first: number; last: number };

const toml = (value: string) => JSON.stringify(value);
const tomlList = (values: readonly string[]) => `[${values.map(toml).join(", ")}]`;

/** Splits `port=80`, `port>=1024` and `port = 80` alike into words. */
function words(values: readonly string[]): string[] {
  return values.flatMap((value) => value.split(/(!=|>=|<=|=|<|>)/).filter((w) => w !== ""));
}

function seconds(statement: Statement): number {
  const n = Number(statement.values[0]);
  if (statement.values.length !== 1 || !Number.isInteger(n) || n < 0) {
    throw new BarefootSyntaxError(
      statement.line,
      `${statement.keyword}: expected a number of seconds`,
    );
  }
  return n;
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

/** `port = 80`, `port eq http`, `port 8000-8010`, `port ge 1024`, ... as ranges. */
function parsePorts(spec: readonly string[], line: number, services: ServiceTable): PortRange[] {
  const [first, ...rest] = spec;
  const operators: Record<string, string> = {
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
  const operator = operators[first?.toLowerCase() ?? ""];
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

/** Splits `ADDR [port ...]` into the address and the port words. */
function addressAndPorts(statement: Statement): { address: string; ports: string[] | null } {
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
function clientNetworks(statement: Statement): string[] | null {
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

/** `to:` as listen addresses (one per port range). */
function listenAddresses(statement: Statement, services: ServiceTable): string[] {
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
  return ranges.map((r) =>
    r.first === r.last ? `${host}:${r.first}` : `${host}:${r.first}-${r.last}`
  );
}

/** `bounce to:` as a target; Barefoot takes one port (`port = N`) or none. */
function target(statement: Statement, services: ServiceTable): string {
  const { address, ports } = addressAndPorts(statement);
  const host = address.includes(":") ? `[${address}]` : address;
  if (ports === null) return host;
  const ranges = parsePorts(ports, statement.line, services);
  if (ranges.length !== 1 || ranges[0].first !== ranges[0].last) {
    throw new BarefootSyntaxError(statement.line, `bounce to: takes one port ("port = N")`);
  }
  return `${host}:${ranges[0].first}`;
}

const LOG_EVENTS: Record<string, string> = {
  connect: "connect",
  disconnect: "disconnect",
  data: "data",
  iooperation: "data",
  error: "error",
};

/** Translates a parsed file into TOML text with warnings. */
export function translateBarefoot(
  file: BarefootFile,
  source: string,
  services: ServiceTable,
): Translation {
  const warnings: ImportWarning[] = [];
  const out: string[] = [
    `# Translated from ${source} by portbounce import-barefoot.`,
    "# Rule order is kept: the first rule whose clients match decides, as in Barefoot.",
    "",
  ];
  const notTranslated = (line: number, what: string, why: string) => {
    warnings.push({ line, message: `not translated: ${what} (${why})` });
    return `# not translated (line ${line}): ${what} -- ${why}`;
  };

  // [server] and [defaults] from the settings.
  const server: string[] = [];
  const defaults = new Map<string, string>([
    ["connect_timeout", `"30s" # Barefoot's default timeout.connect`],
    ["udp_idle_timeout", `"3600s" # Barefoot's default timeout.io.udp`],
    ["log", "[] # Barefoot logs a rule's sessions only where the rule says log:"],
  ]);
  const comments: string[] = [];
  for (const setting of file.settings) {
    const text = `${setting.keyword}: ${setting.values.join(" ")}`;
    switch (setting.keyword) {
      case "logoutput": {
        const outputs: string[] = [];
        for (const value of setting.values) {
          if (value === "stderr" || value === "stdout") outputs.push(value);
          else if (value.startsWith("syslog")) {
            comments.push(
              notTranslated(
                setting.line,
                `logoutput: ${value}`,
                "portbounce does not log to syslog; stderr reaches the journal under systemd",
              ),
            );
          } else outputs.push(value.includes("/") ? value : `./${value}`);
        }
        if (outputs.length > 0) server.push(`log = ${tomlList(outputs)}`);
        break;
      }
      case "debug":
        if (seconds(setting) > 0) server.push(`log_level = "debug" # ${text}`);
        break;
      case "timeout.connect":
        defaults.set("connect_timeout", `"${seconds(setting)}s" # ${text}`);
        break;
      case "timeout.io":
      case "timeout.io.tcp":
      case "timeout.io.udp": {
        const n = seconds(setting);
        if (setting.keyword !== "timeout.io.udp") defaults.set("idle_timeout", `"${n}s" # ${text}`);
        if (setting.keyword !== "timeout.io.tcp") {
          if (n > 0) defaults.set("udp_idle_timeout", `"${n}s" # ${text}`);
          else {comments.push(
              notTranslated(
                setting.line,
                text,
                "a UDP session without idle timeout would never end; keeping 3600s",
              ),
            );}
        }
        break;
      }
      case "udp.connectdst":
        if (setting.values[0]?.toLowerCase() === "yes") {
          comments.push(`# ${text}: portbounce always relays replies from the target only`);
        } else {comments.push(
            notTranslated(
              setting.line,
              text,
              "portbounce always relays replies from the target only",
            ),
          );}
        break;
      case "external":
        comments.push(
          notTranslated(
            setting.line,
            text,
            "portbounce connects out from the address the system's routing picks",
          ),
        );
        break;
      case "internal":
        comments.push(
          notTranslated(
            setting.line,
            text,
            "Barefoot rejects it too: listen addresses come from the rules' to:",
          ),
        );
        break;
      default:
        comments.push(notTranslated(setting.line, text, "no portbounce equivalent"));
    }
  }
  if (server.length > 0) out.push("[server]", ...server, "");
  out.push("[defaults]", ...[...defaults].map(([key, value]) => `${key} = ${value}`), "");
  if (comments.length > 0) out.push(...comments, "");

  let ruleNumber = 0;
  for (const block of file.blocks) {
    if (block.kind !== "client") {
      out.push(
        notTranslated(
          block.line,
          `${block.kind}${block.action ? ` ${block.action}` : ""} { ... }`,
          `${block.kind} blocks have no portbounce equivalent`,
        ),
      );
      out.push(...quote(file, block), "");
      continue;
    }
    ruleNumber++;
    try {
      out.push(...translateRule(block, ruleNumber, services, notTranslated), "");
    } catch (error) {
      if (!(error instanceof NotTranslatable)) throw error;
      out.push(
        notTranslated(block.line, `client ${block.action} { ... }, the whole rule`, error.message),
      );
      out.push(...quote(file, block), "");
    }
  }
  return { toml: out.join("\n").trimEnd() + "\n", warnings };
}

/** The original lines of a block, commented out. */
function quote(file: BarefootFile, block: Block): string[] {
  return file.lines.slice(block.line - 1, block.endLine).map((line) => `#   ${line}`);
}

function translateRule(
  block: Block,
  number: number,
  services: ServiceTable,
  notTranslated: (line: number, what: string, why: string) => string,
): string[] {
  const action = block.action!;
  const lines = [
    `# barefootd.conf line ${block.line}: client ${action}`,
    "[[rule]]",
    `name = "${action}-${number}"`,
  ];
  if (action === "block") lines.push('action = "block"');
  const extra: string[] = [];
  let listen: string[] | undefined;
  let from: string[] | null = null;
  let bounceTo: string | undefined;
  let protocols = ["tcp", "udp"];
  const log: string[] = [];
  let stateKey = "from";
  for (const s of block.statements) {
    const text = `${s.keyword}: ${s.values.join(" ")}`;
    switch (s.keyword) {
      case "from":
        from = clientNetworks(s);
        break;
      case "to":
        listen = listenAddresses(s, services);
        break;
      case "bounce to":
        bounceTo = target(s, services);
        break;
      case "protocol":
        protocols = s.values.map((v) => v.toLowerCase());
        if (protocols.length === 0 || protocols.some((p) => p !== "tcp" && p !== "udp")) {
          throw new BarefootSyntaxError(s.line, `protocol: expected tcp and/or udp`);
        }
        break;
      case "log":
        for (const value of s.values) {
          const event = value.toLowerCase() === "connect" && action === "block"
            ? "block"
            : LOG_EVENTS[value.toLowerCase()];
          if (event) {
            if (!log.includes(event)) log.push(event);
          } else extra.push(notTranslated(s.line, `log: ${value}`, "no such portbounce log event"));
        }
        break;
      case "session.max":
        extra.push(`max_sessions = ${count(s)}`);
        break;
      case "session.throttle":
        extra.push(`throttle = ${toml(throttle(s))}`);
        break;
      case "session.state.key":
        stateKey = s.values[0]?.toLowerCase() ?? "";
        if (stateKey !== "from") {
          extra.push(
            notTranslated(s.line, text, "portbounce keys client state by client address only"),
          );
        }
        break;
      case "session.state.max":
        if (stateKey === "from") extra.push(`max_sessions_per_client = ${count(s)}`);
        else extra.push(notTranslated(s.line, text, "its state key is not the client address"));
        break;
      case "timeout.connect":
        extra.push(`connect_timeout = "${seconds(s)}s"`);
        break;
      case "timeout.io":
      case "timeout.io.tcp":
        extra.push(`idle_timeout = "${seconds(s)}s"`);
        if (s.keyword === "timeout.io" && seconds(s) > 0) {
          extra.push(`udp_idle_timeout = "${seconds(s)}s"`);
        }
        break;
      case "timeout.io.udp":
        if (seconds(s) > 0) extra.push(`udp_idle_timeout = "${seconds(s)}s"`);
        else {extra.push(
            notTranslated(s.line, text, "a UDP session without idle timeout would never end"),
          );}
        break;
      case "session.state.throttle":
        extra.push(notTranslated(s.line, text, "portbounce throttles per rule, not per client"));
        break;
      case "session.inheritable":
        extra.push(
          notTranslated(s.line, text, "a session always keeps the rule it matched in portbounce"),
        );
        break;
      case "bandwidth":
        extra.push(notTranslated(s.line, text, "portbounce does not limit bandwidth"));
        break;
      case "redirect from":
        extra.push(
          notTranslated(
            s.line,
            text,
            "portbounce connects out from the address the system's routing picks",
          ),
        );
        break;
      default:
        extra.push(notTranslated(s.line, text, "no portbounce equivalent"));
    }
  }
  if (!listen) throw new NotTranslatable("the rule has no to: (the address Barefoot listens on)");
  if (action === "pass" && bounceTo === undefined) {
    throw new NotTranslatable("a pass rule without bounce to: has nowhere to send clients");
  }
  lines.push(
    `protocol = ${tomlList(protocols)}${
      block.statements.some((s) => s.keyword === "protocol")
        ? ""
        : " # Barefoot: no protocol: means both"
    }`,
  );
  lines.push(`listen = ${listen.length === 1 ? toml(listen[0]) : tomlList(listen)}`);
  if (from !== null) lines.push(`from = ${tomlList(from)}`);
  if (action === "pass") lines.push(`bounce_to = ${toml(bounceTo!)}`);
  lines.push(`log = ${tomlList(log)}`, ...extra);
  return lines;
}

function count(s: Statement): number {
  const n = Number(s.values[0]);
  if (s.values.length !== 1 || !Number.isInteger(n) || n < 0) {
    throw new BarefootSyntaxError(s.line, `${s.keyword}: expected a whole number`);
  }
  return n;
}

function throttle(s: Statement): string {
  const match = /^(\d+)\/(\d+)$/.exec(s.values.join(""));
  if (!match || Number(match[1]) < 1 || Number(match[2]) < 1) {
    throw new BarefootSyntaxError(s.line, `${s.keyword}: expected COUNT/SECONDS, e.g. 10/1`);
  }
  return `${match[1]}/${match[2]}s`;
}
