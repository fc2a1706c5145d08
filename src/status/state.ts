/**
 * What is kept across a restart (`[server] state`): each rule's client
 * ledger and first and last session, and the per-minute history of rules and
 * listeners. The text is JSON whose first key marks it as portbounce's, so
 * that a file that is not one is never taken for one (and never
 * overwritten). Pure: encoding, and decoding with every way a file can be
 * wrong named.
 *
 * @module
 */
import { parseIp } from "../config/network.ts";
import type { Bucket } from "./history.ts";
import type { ClientEntry } from "./ledger.ts";

/** The format's version; another is set aside, not read. */
export const STATE_VERSION = 1;
/** Every state file starts with this (the key is written first). */
const STATE_MARK = '{"portbounce_state":';

/** One client, compactly: address, via, first and last seen, sessions, refused, bytes up, down. */
type SavedClient = [string, string, number, number, number, number, number, number];

/** One rule's state. */
export interface RuleState {
  readonly firstSession: number | null;
  readonly firstClient: string | null;
  readonly lastSession: number | null;
  readonly lastClient: string | null;
  readonly clients: readonly ClientEntry[];
  readonly evicted: number;
}

/** Everything kept. */
export interface SavedState {
  /** When it was written (epoch ms). */
  readonly written: number;
  readonly rules: Readonly<Record<string, RuleState>>;
  /** Per-minute history by key (`rule:NAME`, `listener:KEY`). */
  readonly history: Readonly<Record<string, readonly Bucket[]>>;
}

/** The state as the text of a state file. */
export function encodeState(state: SavedState): string {
  const rules: Record<string, unknown> = {};
  for (const [name, rule] of Object.entries(state.rules)) {
    rules[name] = {
      first_session: rule.firstSession,
      first_client: rule.firstClient,
      last_session: rule.lastSession,
      last_client: rule.lastClient,
      evicted: rule.evicted,
      clients: rule.clients.map((c): SavedClient => [
        c.address,
        c.via,
        c.firstSeen,
        c.lastSeen,
        c.sessions,
        c.refused,
        c.bytesUp,
        c.bytesDown,
      ]),
    };
  }
  // The mark first: JSON.stringify keeps the order keys were added in.
  return JSON.stringify({
    portbounce_state: STATE_VERSION,
    written: new Date(state.written).toISOString(),
    rules,
    history: state.history,
  }) + "\n";
}

/** Whether `text` starts as a state file does (so it is one, whole or damaged). */
export function looksLikeState(text: string): boolean {
  return text.trimStart().startsWith(STATE_MARK);
}

/** Reads a state file's text, or says why it cannot be used. */
export function decodeState(text: string): SavedState | { damaged: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { damaged: `not whole JSON (${(error as Error).message})` };
  }
  if (!isObject(value)) return { damaged: "not a JSON object" };
  if (value.portbounce_state !== STATE_VERSION) {
    return {
      damaged: `version ${
        JSON.stringify(value.portbounce_state)
      }, this portbounce reads ${STATE_VERSION}`,
    };
  }
  const written = typeof value.written === "string" ? Date.parse(value.written) : NaN;
  if (!Number.isFinite(written)) return { damaged: "no time it was written" };
  if (!isObject(value.rules) || !isObject(value.history)) return { damaged: "no rules or history" };
  if (written > MAX_TIME) return { damaged: "a time it was written no clock reaches" };
  const rules: Record<string, RuleState> = {};
  for (const [name, saved] of Object.entries(value.rules)) {
    if (!isObject(saved) || !Array.isArray(saved.clients)) {
      return { damaged: `rule ${JSON.stringify(name)} is not whole` };
    }
    const clients: ClientEntry[] = [];
    for (const c of saved.clients) {
      if (!isClient(c)) return { damaged: `a client of rule ${JSON.stringify(name)} is not whole` };
      const [address, via, firstSeen, lastSeen, sessions, refused, bytesUp, bytesDown] = c;
      clients.push({
        address,
        via,
        firstSeen,
        lastSeen,
        sessions,
        refused,
        bytesUp,
        bytesDown,
        active: 0,
      });
    }
    rules[name] = {
      firstSession: numberOrNull(saved.first_session),
      firstClient: stringOrNull(saved.first_client),
      lastSession: numberOrNull(saved.last_session),
      lastClient: stringOrNull(saved.last_client),
      evicted: typeof saved.evicted === "number" && saved.evicted >= 0 ? saved.evicted : 0,
      clients,
    };
  }
  const history: Record<string, Bucket[]> = {};
  for (const [key, buckets] of Object.entries(value.history)) {
    if (!Array.isArray(buckets) || !buckets.every(isBucket)) {
      return { damaged: `the history of ${JSON.stringify(key)} is not whole` };
    }
    history[key] = buckets;
  }
  return { written, rules, history };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The latest time a Date holds (ms): a time beyond it breaks every view that prints it. */
const MAX_TIME = 8.64e15;

function count(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function time(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 && value <= MAX_TIME;
}

/** Printable ASCII, as addresses and `ip:port` are: nothing that would reach a terminal raw. */
function printable(value: unknown, max = 80): value is string {
  return typeof value === "string" && value.length <= max && /^[\x21-\x7e]+$/.test(value);
}

function isClient(value: unknown): value is SavedClient {
  return Array.isArray(value) && value.length === 8 && printable(value[0], 45) &&
    !("error" in parseIp(value[0])) && printable(value[1]) && time(value[2]) && time(value[3]) &&
    value.slice(4).every(count);
}

function isBucket(value: unknown): value is Bucket {
  return isObject(value) && time(value.minute) && (value.minute as number) % 60_000 === 0 &&
    ["sessions", "clients", "bytes_up", "bytes_down", "errors", "blocked"].every((k) =>
      count(value[k])
    );
}

function numberOrNull(value: unknown): number | null {
  return time(value) ? value : null;
}

function stringOrNull(value: unknown): string | null {
  return printable(value) ? value : null;
}
