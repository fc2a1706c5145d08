/**
 * The validated rule set: what a rule file means once every value is parsed.
 * Anything of these types is known to be valid; nothing downstream re-checks.
 *
 * @module
 */
import type { ListenEndpoint, Protocol, TargetEndpoint } from "./endpoint.ts";
import { clip } from "./describe.ts";
import type { Network } from "./network.ts";

export type { Protocol };

/** Per-rule log events (Barefoot's names where they exist). */
export const LOG_EVENTS = [
  "connect",
  "disconnect",
  "block",
  "error",
  "data",
] as const;
/** One per-rule log event. */
export type LogEvent = typeof LOG_EVENTS[number];

/** Server log levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;
/** A server log level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Log line formats. */
export const LOG_FORMATS = ["text", "json"] as const;
/** `[server] client_names` choices. */
export const CLIENT_NAMES = ["reverse-dns", "off"] as const;
/** How clients are named in the ledger. */
export type ClientNames = typeof CLIENT_NAMES[number];
/** Most clients a rule's ledger may keep (`[server] clients`). */
export const MAX_LEDGER_CLIENTS = 1_000_000;
/** A log line format. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Where log lines go. */
export type LogOutput =
  | { readonly kind: "stderr" }
  | { readonly kind: "stdout" }
  | { readonly kind: "file"; readonly path: string }
  /** A local syslog daemon's unix datagram socket. */
  | { readonly kind: "syslog"; readonly path: string };

/** Where `log = ["syslog"]` sends lines. */
export const DEFAULT_SYSLOG_SOCKET = "/dev/log";

/** Syslog facilities by name, in their RFC 3164 order. */
export const SYSLOG_FACILITIES = [
  "kern",
  "user",
  "mail",
  "daemon",
  "auth",
  "syslog",
  "lpr",
  "news",
  "uucp",
  "cron",
  "authpriv",
  "ftp",
  "ntp",
  "security",
  "console",
  "solaris-cron",
  "local0",
  "local1",
  "local2",
  "local3",
  "local4",
  "local5",
  "local6",
  "local7",
] as const;
/** A syslog facility. */
export type SyslogFacility = typeof SYSLOG_FACILITIES[number];

/** `[server] workers`: 1 to {@linkcode MAX_WORKERS}, or "auto" (one per core). */
export type WorkerCount = number | "auto";

/** The most workers a rule file may ask for. */
export const MAX_WORKERS = 64;

/** `[server] buffer_memory` when unset: 128 MiB for the relays' large buffers. */
export const DEFAULT_BUFFER_MEMORY = 128 * 1024 * 1024;

/** How a rule with several targets picks one for a new session. */
export const BALANCE_MODES = ["failover", "round-robin", "least-sessions", "source-hash"] as const;
/** A balance mode. */
export type BalanceMode = typeof BALANCE_MODES[number];

/** Active health checks of a rule's targets: TCP connects. */
export interface HealthCheck {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive successes that bring a target back up. */
  readonly rise: number;
  /** Consecutive failures that mark it down. */
  readonly fall: number;
}

/** The address outgoing traffic leaves from: an address, or an interface's first address of the target's family. */
export type SourceAddress =
  | { readonly kind: "ip"; readonly address: string; readonly family: 4 | 6; readonly text: string }
  | { readonly kind: "interface"; readonly name: string; readonly text: string };

/** PROXY protocol versions sent toward targets. */
export const PROXY_PROTOCOLS = ["v1", "v2"] as const;
/** A PROXY protocol version. */
export type ProxyProtocol = typeof PROXY_PROTOCOLS[number];

/** At most `count` new sessions per `intervalMs`. */
export interface Throttle {
  readonly count: number;
  readonly intervalMs: number;
  readonly text: string;
}

/** Settings every rule has, from the rule itself, `[defaults]` or built-in defaults. */
export interface RuleSettings {
  readonly protocols: readonly Protocol[];
  readonly from: readonly Network[];
  readonly connectTimeoutMs: number;
  /** 0 means no limit. */
  readonly idleTimeoutMs: number;
  /** TCP: a write without progress for this long ends the session as `stalled`; 0 = never. */
  readonly stallTimeoutMs: number;
  readonly udpIdleTimeoutMs: number;
  readonly log: ReadonlySet<LogEvent>;
  /** 0 means unlimited. */
  readonly maxSessions: number;
  /** 0 means unlimited. */
  readonly maxSessionsPerClient: number;
  readonly throttle: Throttle | null;
  /** How a target is picked among several. */
  readonly balance: BalanceMode;
  /** Active health checks, or null for passive ones only (TCP connect failures). */
  readonly healthCheck: HealthCheck | null;
  /** Where outgoing traffic leaves from; null: where the system's routing says. */
  readonly source: SourceAddress | null;
  /** PROXY protocol header sent to the target first (TCP only), or null. */
  readonly proxyProtocol: ProxyProtocol | null;
  /** Bytes per second the rule's sessions may move, each direction on its own; null: no limit. */
  readonly bandwidth: number | null;
  /** Warn when a rule that had traffic sees no new session for this long; null: never. */
  readonly alarmQuietMs: number | null;
  /** Warn when errors exceed this many per interval; null: never. */
  readonly alarmErrors: Throttle | null;
}

/** Where a rule stands in its file: its `[[rule]]` line and its keys' lines. */
export interface RuleLines {
  readonly header: number | null;
  readonly keys: ReadonlyMap<string, number>;
}

interface RuleBase extends RuleSettings {
  /** 1-based position in the file. */
  readonly index: number;
  /** Lines of the rule in its file, for messages about it found after loading. */
  readonly lines: RuleLines;
  readonly name: string;
  readonly listen: readonly ListenEndpoint[];
  /** When the rule ends (`until`, epoch ms): it then takes no new session; null: never. */
  readonly until: number | null;
}

/** A rule that bounces matching clients to its targets. */
export interface PassRule extends RuleBase {
  readonly action: "pass";
  /** One target or more, in the order `balance` reads them. */
  readonly bounceTo: readonly TargetEndpoint[];
}

/** A rule that refuses matching clients. */
export interface BlockRule extends RuleBase {
  readonly action: "block";
}

/** One `[[rule]]`. */
export type Rule = PassRule | BlockRule;

/** `[server]`. */
export interface ServerSettings {
  readonly log: readonly LogOutput[];
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  /** Address of the status endpoint, or null when it is off. */
  readonly status: { readonly hostname: string; readonly port: number } | null;
  /**
   * More `Host` values the status endpoint answers on a loopback or private
   * address (names, `name:port`), lowercase: for names of the host, or an
   * address published through NAT or a container.
   */
  readonly statusHosts: readonly string[];
  readonly drainTimeoutMs: number;
  /** How long sessions of rules or listeners removed by a reload may go on; 0 = no limit. */
  readonly reloadDrainTimeoutMs: number;
  /** Whether a reload closes live sessions whose client the new rules refuse. */
  readonly reloadEnforcesRules: boolean;
  /** Bytes of large relay buffers (TCP streaming, UDP receives) allowed at once. */
  readonly bufferMemory: number;
  /** Where to write the process id, or null. */
  readonly pidFile: string | null;
  /** Facility of lines sent to syslog. */
  readonly syslogFacility: SyslogFacility;
  /** Where outgoing traffic leaves from, for rules that do not say (Barefoot's `external:`). */
  readonly source: SourceAddress | null;
  /** How much per-minute history is kept (ms). */
  readonly historyMs: number;
  /** Isolates accepting TCP connections (`[server] workers`): a count, or "auto" for one per core. */
  readonly workers: WorkerCount;
  /**
   * Client addresses remembered per rule (the client ledger); the least
   * recently seen go first. 0: none are kept (no ledger).
   */
  readonly clients: number;
  /** How the ledger names clients: reverse DNS in the background, or not at all. */
  readonly clientNames: ClientNames;
  /** Where the ledger, history and first-traffic times are kept across restarts; null: memory only. */
  readonly state: string | null;
}

/** A whole, valid rule file. */
export interface Config {
  /** Where it came from, for messages. */
  readonly source: string;
  readonly server: ServerSettings;
  readonly rules: readonly Rule[];
}

/** `file:line` of a rule's key (or of the rule) in `source`. */
export function ruleWhere(
  source: string,
  rule: { readonly lines: RuleLines },
  key?: string,
): string {
  const line = (key !== undefined ? rule.lines.keys.get(key) : undefined) ?? rule.lines.header;
  return line === null || line === undefined ? source : `${source}:${line}`;
}

/** `bounce_to` as written: `a:80` or `a:80, b:80`. */
export function targetsText(rule: PassRule): string {
  return rule.bounceTo.map((t) => t.text).join(", ");
}

/** How a rule is named in messages: `rule "web" (rule #2)`. */
export function ruleLabel(
  rule: { readonly name: string; readonly index: number },
): string {
  return `rule "${clip(rule.name, 64)}" (rule #${rule.index})`;
}
