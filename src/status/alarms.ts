/**
 * Rule alarms, as Barefoot's `monitor { }` raised them: a rule's first
 * traffic since start (`first-traffic`), a rule that had traffic and then no
 * new session for `alarm_quiet` (`quiet`, and `resumed` when it comes back),
 * and errors beyond `alarm_errors` (COUNT per INTERVAL). Pure: the caller
 * passes each rule's latest session time and error count, and the clock.
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import type { Rule } from "../config/types.ts";

/** What a rule raised. */
export type AlarmKind = "first-traffic" | "quiet" | "resumed" | "errors";

/** One alarm event. */
export interface AlarmEvent {
  readonly kind: AlarmKind;
  readonly rule: string;
  /** When it was raised (epoch ms). */
  readonly at: number;
  readonly detail: string;
}

/** A rule's state, as alarms read it. */
export interface RuleActivity {
  /** First session start (epoch ms), or null. */
  readonly firstSession: number | null;
  /** Latest session start (epoch ms), or null. */
  readonly lastSession: number | null;
  /** Errors so far. */
  readonly errors: number;
}

interface Watch {
  seenTraffic: boolean;
  quiet: boolean;
  /** Error counts at each evaluation within the error window: [time, errors]. */
  errorSamples: [number, number][];
  errorsRaised: boolean;
}

/** How many raised alarms are kept for the page and /status.json. */
const KEEP = 100;

/** Watches every rule and says when an alarm is raised or cleared. */
export class Alarms {
  readonly #watches = new Map<string, Watch>();
  readonly #recent: AlarmEvent[] = [];
  /** Alarms raised so far, by rule and kind (for /metrics). */
  readonly counts = new Map<string, number>();

  /** Evaluates `rules` at `now`; returns what was raised since the last call. */
  evaluate(
    rules: readonly Rule[],
    activity: (rule: string) => RuleActivity,
    now: number,
  ): AlarmEvent[] {
    const raised: AlarmEvent[] = [];
    const raise = (kind: AlarmKind, rule: string, detail: string, at = now) => {
      const event = { kind, rule, at, detail };
      raised.push(event);
      this.#recent.push(event);
      if (this.#recent.length > KEEP) this.#recent.shift();
      const key = `${rule}\u0000${kind}`;
      this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    };
    for (const rule of rules) {
      if (rule.action !== "pass") continue;
      const watch = this.#watch(rule.name);
      const { firstSession, lastSession, errors } = activity(rule.name);
      if (firstSession !== null && !watch.seenTraffic) {
        watch.seenTraffic = true;
        // Raised at the next tick, about the session that was first: its time, not the tick's.
        raise("first-traffic", rule.name, "the first session since start", firstSession);
      }
      const quietMs = rule.alarmQuietMs;
      if (quietMs !== null && lastSession !== null) {
        const silent = now - lastSession;
        if (!watch.quiet && silent >= quietMs) {
          watch.quiet = true;
          raise(
            "quiet",
            rule.name,
            `no new session for ${formatDuration(Math.round(silent / 1_000) * 1_000)}`,
          );
        } else if (watch.quiet && silent < quietMs) {
          watch.quiet = false;
          raise("resumed", rule.name, "new sessions again");
        }
      }
      const limit = rule.alarmErrors;
      if (limit !== null) {
        watch.errorSamples.push([now, errors]);
        while (watch.errorSamples.length > 1 && watch.errorSamples[0][0] < now - limit.intervalMs) {
          watch.errorSamples.shift();
        }
        const inWindow = errors - watch.errorSamples[0][1];
        if (!watch.errorsRaised && inWindow > limit.count) {
          watch.errorsRaised = true;
          raise("errors", rule.name, `${inWindow} errors within ${limit.text.split("/")[1]}`);
        } else if (watch.errorsRaised && inWindow <= limit.count) {
          watch.errorsRaised = false;
        }
      }
    }
    return raised;
  }

  /** The rule had its first traffic before a restart: that alarm is not raised again. */
  seen(rule: string): void {
    this.#watch(rule).seenTraffic = true;
  }

  #watch(rule: string): Watch {
    let watch = this.#watches.get(rule);
    if (!watch) {
      this.#watches.set(
        rule,
        watch = { seenTraffic: false, quiet: false, errorSamples: [], errorsRaised: false },
      );
    }
    return watch;
  }

  /** Alarms in force now: rules quiet, or with errors beyond their limit. */
  active(): { rule: string; kind: "quiet" | "errors" }[] {
    const out: { rule: string; kind: "quiet" | "errors" }[] = [];
    for (const [rule, watch] of this.#watches) {
      if (watch.quiet) out.push({ rule, kind: "quiet" });
      if (watch.errorsRaised) out.push({ rule, kind: "errors" });
    }
    return out;
  }

  /** The latest alarms raised, oldest first. */
  recent(): readonly AlarmEvent[] {
    return this.#recent;
  }

  /** Forgets rules no longer in force. */
  keep(rules: ReadonlySet<string>): void {
    for (const rule of this.#watches.keys()) if (!rules.has(rule)) this.#watches.delete(rule);
  }
}
