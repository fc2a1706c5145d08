/**
 * Session events and how they look in the log: one text line in the shape
 * docs/operations.md's Logging section shows, or one JSON object per line with the same fields named.
 *
 * @module
 */
import type { Logger, LogRecord } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import type { LogEvent, Protocol, Rule } from "../config/types.ts";
import type { BlockReason, Direction, DisconnectReason } from "../relay/session.ts";

/** One per-session log event; fields are named as in the JSON log. */
export interface SessionEvent {
  readonly event: LogEvent;
  readonly action: "pass" | "block";
  /** Null when no rule matched the client. */
  readonly rule: string | null;
  readonly protocol: Protocol;
  readonly client: string;
  readonly listen: string;
  readonly target?: string;
  readonly bytes_up?: number;
  readonly bytes_down?: number;
  /** UDP `disconnect` events: datagrams each way. */
  readonly datagrams_up?: number;
  readonly datagrams_down?: number;
  readonly duration_ms?: number;
  readonly reason?: DisconnectReason | BlockReason;
  readonly error?: string;
  /** `data` events: bytes in this read and its direction. */
  readonly bytes?: number;
  readonly direction?: Direction;
  /** `connect` events: the bouncer's own `ip:port` toward the target. */
  readonly local?: string;
}

const EVENT_LEVEL = {
  connect: "info",
  disconnect: "info",
  block: "info",
  error: "warning",
  data: "info",
} as const;

/**
 * Logs a session event if the rule asks for it. Refusals by no rule at all are
 * always logged: deny by default must never be silent.
 */
export function logSessionEvent(log: Logger, event: SessionEvent, rule: Rule | null): void {
  if (rule !== null && !rule.log.has(event.event)) return;
  log[EVENT_LEVEL[event.event]]("{event}", { ...event });
}

const LEVEL_NAMES: Record<string, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARNING",
  error: "ERROR",
  fatal: "FATAL",
};

function isSessionEvent(properties: Record<string, unknown>): boolean {
  return typeof properties.event === "string" &&
    typeof properties.client === "string";
}

/** `pass(web) tcp connect 198.51.100.7:51234 -> 203.0.113.10:80 -> 192.0.2.10:80 ...` */
export function renderSessionEvent(event: SessionEvent): string {
  let line = `${event.action}(${
    event.rule ?? "-"
  }) ${event.protocol} ${event.event} ${event.client} -> ${event.listen}`;
  if (event.target !== undefined) line += ` -> ${event.target}`;
  if (event.local !== undefined) line += ` via ${event.local}`;
  if (event.bytes !== undefined) {
    line += ` ${event.direction} ${event.bytes} bytes`;
  }
  if (event.bytes_up !== undefined) {
    line += ` up=${event.bytes_up} down=${event.bytes_down}`;
  }
  if (event.datagrams_up !== undefined) {
    line += ` datagrams_up=${event.datagrams_up} datagrams_down=${event.datagrams_down}`;
  }
  if (event.duration_ms !== undefined) {
    line += ` duration=${formatDuration(event.duration_ms)}`;
  }
  if (event.reason !== undefined) line += ` reason=${event.reason}`;
  if (event.error !== undefined) {
    line += ` error=${JSON.stringify(event.error)}`;
  }
  return line;
}

function renderMessage(record: LogRecord): string {
  return record.message.map((part) => typeof part === "string" ? part : JSON.stringify(part))
    .join("");
}

/**
 * Control characters written as escapes: a value from a rule file or a peer
 * (a `listen` with a newline) must not forge a log line of its own.
 */
export function escapeControls(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** A record's text without time and level (what syslog is given), on one line. */
export function textBody(record: LogRecord): string {
  return escapeControls(
    isSessionEvent(record.properties)
      ? renderSessionEvent(record.properties as unknown as SessionEvent)
      : renderMessage(record),
  );
}

/** Text lines: `TIME LEVEL message`, one line each, whatever the values hold. */
export function textFormatter(record: LogRecord): string {
  return `${new Date(record.timestamp).toISOString()} ${LEVEL_NAMES[record.level]} ${
    textBody(record)
  }\n`;
}

/** JSON lines: `{"time", "level", ...fields}`; other messages carry `message`. */
export function jsonFormatter(record: LogRecord): string {
  const head = {
    time: new Date(record.timestamp).toISOString(),
    level: record.level,
  };
  const body = isSessionEvent(record.properties)
    ? record.properties
    : { message: renderMessage(record), ...record.properties };
  return JSON.stringify({ ...head, ...body }) + "\n";
}
