/**
 * Session admission per rule: `max_sessions`, `max_sessions_per_client` and
 * `throttle` (Barefoot's session.max, session.state.max, session.throttle).
 * The clock is passed in, so this is pure and tested without waiting.
 *
 * @module
 */
import type { RuleSettings } from "../config/types.ts";

/** Which limit refused a session. */
export type LimitName = "max_sessions" | "max_sessions_per_client" | "throttle";

/** A granted session slot; release it exactly once when the session ends. */
export interface Admission {
  release(): void;
}

type Limited = Pick<
  RuleSettings,
  "maxSessions" | "maxSessionsPerClient" | "throttle"
>;

/** Live counts and recent session starts for one rule. */
export class RuleLimiter {
  #active = 0;
  readonly #perClient = new Map<string, number>();
  /** Start times within the throttle interval, oldest first. */
  readonly #starts: number[] = [];

  /** @param limits the rule's limits; a reload that changes them sets new ones here */
  constructor(public limits: Limited) {}

  /** Admits a new session from `client` at `now` (ms), or names the limit that refuses it. */
  admit(client: string, now: number): Admission | { refused: LimitName } {
    const { maxSessions, maxSessionsPerClient, throttle } = this.limits;
    if (maxSessions > 0 && this.#active >= maxSessions) {
      return { refused: "max_sessions" };
    }
    const ofClient = this.#perClient.get(client) ?? 0;
    if (maxSessionsPerClient > 0 && ofClient >= maxSessionsPerClient) {
      return { refused: "max_sessions_per_client" };
    }
    if (throttle) {
      while (
        this.#starts.length > 0 && this.#starts[0] <= now - throttle.intervalMs
      ) {
        this.#starts.shift();
      }
      if (this.#starts.length >= throttle.count) return { refused: "throttle" };
      this.#starts.push(now);
    }
    return this.#count(client);
  }

  /**
   * Counts a session that was let in without asking (a worker's, decided when
   * its rule had no limits): later sessions see it against limits a reload added.
   */
  hold(client: string, now: number): Admission {
    if (this.limits.throttle) this.#starts.push(now);
    return this.#count(client);
  }

  #count(client: string): Admission {
    this.#active++;
    this.#perClient.set(client, (this.#perClient.get(client) ?? 0) + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#active--;
        const left = (this.#perClient.get(client) ?? 1) - 1;
        if (left === 0) this.#perClient.delete(client);
        else this.#perClient.set(client, left);
      },
    };
  }

  /** Sessions currently admitted. */
  get active(): number {
    return this.#active;
  }
}
