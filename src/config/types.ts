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
}

/** A rule that bounces matching clients to its target. */
export interface PassRule extends RuleBase {
  readonly action: "pass";
  readonly bounceTo: TargetEndpoint;
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

/** How a rule is named in messages: `rule "web" (rule #2)`. */
export function ruleLabel(
  rule: { readonly name: string; readonly index: number },
): string {
  return `rule "${clip(rule.name, 64)}" (rule #${rule.index})`;
}
