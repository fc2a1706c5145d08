/**
 * Rules that end (`until`): a temporary rule of a move should not become
 * permanent by being forgotten. Which rules have ended at a time, when the
 * next one ends, and the warnings a rule near its end (or past it) earns at
 * `check`, start and reload. Pure: the clock is passed in.
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import type { ConfigProblem } from "../config/load.ts";
import { type Config, type Rule, ruleLabel, ruleWhere } from "../config/types.ts";

/** A rule ending within this long is warned about. */
export const EXPIRY_WARNING_MS = 7 * 24 * 3_600_000;

/** Whether `rule` has ended at `now`. */
export function hasExpired(rule: Rule, now: number): boolean {
  return rule.until !== null && rule.until <= now;
}

/** When the next of `rules` ends after `now` (epoch ms), or null. */
export function nextExpiry(rules: readonly Rule[], now: number): number | null {
  let next: number | null = null;
  for (const rule of rules) {
    if (rule.until !== null && rule.until > now && (next === null || rule.until < next)) {
      next = rule.until;
    }
  }
  return next;
}

/** One warning per rule that has ended, or ends within {@linkcode EXPIRY_WARNING_MS}. */
export function expiryWarnings(config: Config, now: number): ConfigProblem[] {
  const warnings: ConfigProblem[] = [];
  for (const rule of config.rules) {
    if (rule.until === null || rule.until - now > EXPIRY_WARNING_MS) continue;
    const at = new Date(rule.until).toISOString();
    warnings.push({
      where: ruleWhere(config.source, rule, "until"),
      message: rule.until <= now
        ? `${
          ruleLabel(rule)
        }: until: it ended at ${at} and passes nothing (remove it, or move until)`
        : `${ruleLabel(rule)}: until: it ends at ${at}, in ${
          formatDuration(roundDown(rule.until - now))
        }; then it takes no new session`,
    });
  }
  return warnings;
}

/** Seconds under a minute, minutes under an hour, hours beyond: "3h" reads better than "3.2h". */
function roundDown(ms: number): number {
  const unit = ms < 60_000 ? 1_000 : ms < 3_600_000 ? 60_000 : 3_600_000;
  return Math.max(unit, Math.floor(ms / unit) * unit);
}
