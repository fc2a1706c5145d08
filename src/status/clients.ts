/**
 * `/clients.json` and `portbounce clients`: each rule's clients from its
 * ledger, most recently seen first, with their names as known now. Pure: the
 * names and the clock are passed in.
 *
 * @module
 */
import { parseLookback } from "../config/duration.ts";
import { didYouMean } from "../config/suggest.ts";
import type { Rule } from "../config/types.ts";
import type { Stats } from "./stats.ts";

/** One client of one rule, as `/clients.json` gives it. */
export interface ClientRow {
  readonly address: string;
  /** Reverse-DNS name, when known. */
  readonly name: string | null;
  /** The `ip:port` it last reached. */
  readonly via: string;
  readonly first_seen: string;
  readonly last_seen: string;
  readonly sessions: number;
  readonly refused: number;
  /** Sessions live now. */
  readonly active: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
}

/** One rule's clients. */
export interface RuleClients {
  readonly name: string;
  readonly action: "pass" | "block";
  readonly clients: readonly ClientRow[];
  /** Clients forgotten to stay within `[server] clients`. */
  readonly evicted: number;
}

/** The whole answer. */
export interface ClientsReport {
  /** Whether clients are kept at all (`[server] clients = 0` keeps none). */
  readonly ledger: "on" | "off";
  /** What was asked: one rule or all; clients seen since (ISO), or null for all. */
  readonly rule: string | null;
  readonly since: string | null;
  readonly rules: readonly RuleClients[];
}

/** What `/clients.json` was asked for. */
export interface ClientsQuery {
  readonly rule: string | null;
  /** Only clients seen within this many ms (or live now); null: every client kept. */
  readonly withinMs: number | null;
}

/** Reads `?rule=NAME&since=24h`; a rule that does not exist, or a bad duration, is an error. */
export function parseClientsQuery(
  params: URLSearchParams,
  rules: readonly Rule[],
): ClientsQuery | { error: string } {
  const rule = params.get("rule");
  if (rule !== null && !rules.some((r) => r.name === rule)) {
    return {
      error: `no rule named ${JSON.stringify(rule.slice(0, 80))}${
        didYouMean(rule, rules.map((r) => r.name))
      }`,
    };
  }
  const since = params.get("since");
  if (since === null || since === "") return { rule, withinMs: null };
  const ms = parseLookback(since);
  if (typeof ms !== "number") return { error: `since: ${ms.error}` };
  return { rule, withinMs: ms };
}

/** Builds the report of `query` at `now`. */
export function buildClientsReport(
  rules: readonly Rule[],
  stats: Stats,
  nameOf: (address: string) => string | null,
  query: ClientsQuery,
  now: number,
): ClientsReport {
  // Further back than the clock goes is "every client kept" (and no date out of range).
  const since = query.withinMs === null || query.withinMs >= now ? -Infinity : now - query.withinMs;
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    ledger: stats.clientCapacity === 0 ? "off" : "on",
    rule: query.rule,
    since: since === -Infinity ? null : iso(since),
    rules: rules.filter((r) => query.rule === null || r.name === query.rule).map((rule) => {
      const ledger = stats.rules.get(rule.name)?.clients;
      return {
        name: rule.name,
        action: rule.action,
        evicted: ledger?.evicted ?? 0,
        clients: (ledger?.list(since) ?? []).map((e) => ({
          address: e.address,
          name: nameOf(e.address),
          via: e.via,
          first_seen: iso(e.firstSeen),
          last_seen: iso(e.lastSeen),
          sessions: e.sessions,
          refused: e.refused,
          active: e.active,
          bytes_up: e.bytesUp,
          bytes_down: e.bytesDown,
        })),
      };
    }),
  };
}
