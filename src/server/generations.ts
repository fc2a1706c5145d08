/**
 * Rule generations: the rule set in force, the one before the last reload,
 * and the one decision a reload makes about a live session (it stays, it
 * drains, or it is revoked). A reload asks it of every session it finds; a
 * session that opens after the reload but was decided before (an accept
 * that completed meanwhile, or a worker's report under way) asks it when it
 * opens, so that every session meets the same rule whichever isolate
 * relays it.
 *
 * @module
 */
import { parseClientAddress } from "../config/network.ts";
import type { Rule } from "../config/types.ts";
import { firstMatch } from "../rules/match.ts";
import type { ListenerPlan } from "../rules/plan.ts";

/** How a reload treats live sessions. */
export interface ReloadPolicy {
  /** How long sessions of removed listeners or rules may go on; 0: until they end. */
  readonly drainMs: number;
  /** Whether sessions whose client the new rules refuse are closed. */
  readonly enforce: boolean;
}

/** What a reload makes of a live session. */
export type SessionFate = "stays" | "drains" | "revoked";

/** A live session, as the decision sees it (a tracked session is one). */
export interface SessionPlace {
  readonly setup: { readonly listenerKey: string; readonly clientIp: string };
  readonly rule: { readonly name: string };
}

/**
 * What the rules in force make of `session`: it drains if its listener
 * (`listener`, undefined when removed) or its rule went away; with
 * `enforce`, it is revoked if the listener's rules now refuse its client;
 * otherwise it stays.
 */
export function sessionFate(
  session: SessionPlace,
  ruleNames: ReadonlySet<string>,
  listener: ListenerPlan | undefined,
  enforce: boolean,
): SessionFate {
  if (!listener || !ruleNames.has(session.rule.name)) return "drains";
  if (!enforce) return "stays";
  const client = parseClientAddress(session.setup.clientIp);
  const binding = client ? firstMatch(listener.bindings, client) : undefined;
  return binding?.rule.action === "pass" ? "stays" : "revoked";
}

/** The rule sets an isolate has run, and what the last reload decided. */
export class RuleGenerations {
  #rules: readonly Rule[];
  #previous: readonly Rule[] = [];
  #names: ReadonlySet<string>;
  #generation = 0;
  #policy: ReloadPolicy = { drainMs: 0, enforce: false };
  /**
   * Sessions that opened after the last reload returned but were decided
   * before it, and that it drained or revoked: its summary's share.
   */
  #late = { draining: 0, revoked: 0 };

  constructor(rules: readonly Rule[]) {
    this.#rules = rules;
    this.#names = new Set(rules.map((rule) => rule.name));
  }

  /** The rules in force. */
  get rules(): readonly Rule[] {
    return this.#rules;
  }

  /** The names of the rules in force. */
  get names(): ReadonlySet<string> {
    return this.#names;
  }

  /** The rule set in force: 0 at start, one more for each reload. */
  get generation(): number {
    return this.#generation;
  }

  /** How the last reload treated live sessions. */
  get policy(): ReloadPolicy {
    return this.#policy;
  }

  /** A reload puts `rules` in force under `policy`. */
  advance(rules: readonly Rule[], policy: ReloadPolicy): void {
    this.#previous = this.#rules;
    this.#rules = rules;
    this.#names = new Set(rules.map((rule) => rule.name));
    this.#generation++;
    this.#policy = policy;
    this.#late = { draining: 0, revoked: 0 };
  }

  /** The rule of that name in force, or, failing that, before the last reload. */
  ruleNamed(name: string): Rule | null {
    return this.#rules.find((r) => r.name === name) ??
      this.#previous.find((r) => r.name === name) ?? null;
  }

  /**
   * What becomes of a session that opens now, decided under rule set
   * `decidedUnder` (unknown for this isolate's own accepts, which are decided
   * by the listener's plan of the moment). Any session drains if its listener
   * or rule has gone; one decided under an earlier rule set is also revoked if
   * the last reload enforced the rules and they refuse its client. Counted in
   * the last reload's summary when not `stays`.
   */
  opened(
    session: SessionPlace,
    listener: ListenerPlan | undefined,
    decidedUnder?: number,
  ): SessionFate {
    if (this.#generation === 0) return "stays";
    const older = decidedUnder !== undefined && decidedUnder < this.#generation;
    const fate = sessionFate(session, this.#names, listener, older && this.#policy.enforce);
    if (fate === "drains") this.#late.draining++;
    if (fate === "revoked") this.#late.revoked++;
    return fate;
  }

  /** The late sessions counted since the last reload (or since this was last asked). */
  takeLate(): { draining: number; revoked: number } {
    const late = this.#late;
    this.#late = { draining: 0, revoked: 0 };
    return late;
  }
}
