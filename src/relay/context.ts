/**
 * What a relay engine (TCP or UDP) needs from the server around it: the
 * session registry, counters, per-rule limits and the event log.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { Rule } from "../config/types.ts";
import type { SessionEvent } from "../log/events.ts";
import type { Stats } from "../status/stats.ts";
import type { RuleLimiter } from "./limits.ts";
import type { SessionRegistry } from "./sessions.ts";

/** Shared services for relay engines. */
export interface RelayContext {
  readonly sessions: SessionRegistry;
  readonly stats: Stats;
  /** The limiter of a rule (one per rule object, so a reloaded rule starts afresh). */
  limiter(rule: Rule): RuleLimiter;
  readonly log: Logger;
}

const EVENT_LEVEL = {
  connect: "info",
  disconnect: "info",
  block: "info",
  error: "warning",
  data: "debug",
} as const;

/**
 * Logs a session event if the rule asks for it. Refusals by no rule at all are
 * always logged: deny by default must never be silent.
 */
export function logEvent(
  log: Logger,
  event: SessionEvent,
  rule: Rule | null,
): void {
  if (rule !== null && !rule.log.has(event.event)) return;
  log[EVENT_LEVEL[event.event]]("{event}", { ...event });
}
