/**
 * Watching the move: per-minute history of every rule and listener, and the
 * alarms (first traffic, quiet, resumed, errors) logged as they are raised.
 * What the status page's charts and `/history.json` are drawn from.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { ClientNames as ClientNamesMode, Rule } from "../config/types.ts";
import { formatDuration } from "../config/duration.ts";
import { type AlarmEvent, Alarms } from "../status/alarms.ts";
import { type Bucket, History } from "../status/history.ts";
import type { Stats } from "../status/stats.ts";
import { ClientNames, reverseDns, type ReverseLookup } from "./client_names.ts";
import type { EventGate } from "../log/rate_limit.ts";

/** How often alarms are evaluated and minutes closed. */
const TICK_MS = 1_000;

/** History and alarms of one engine. */
export class Monitor {
  history: History;
  readonly alarms = new Alarms();
  #timer: ReturnType<typeof setInterval> | undefined;
  #rules: readonly Rule[] = [];

  constructor(
    readonly log: Logger,
    readonly stats: Stats,
    windowMs: number,
    /** Rate limits alarms that flap. */
    readonly gate: EventGate,
    /** The clock (epoch ms); tests move it. */
    readonly now: () => number = Date.now,
    /** The monotonic clock of rate-limited alarms (tests move it). */
    readonly monotonic: () => number = () => performance.now(),
  ) {
    this.history = new History(windowMs);
  }

  /** The rules in force (the history window, the clients each ledger keeps) changed. */
  apply(
    rules: readonly Rule[],
    listenerKeys: readonly string[],
    windowMs: number,
    clients: { readonly capacity: number; readonly names: ClientNamesMode },
  ): void {
    this.#rules = rules;
    if (this.history.minutes !== Math.max(2, Math.round(windowMs / 60_000) + 1)) {
      this.history = new History(windowMs);
    }
    const keys = new Set([
      ...rules.map((r) => `rule:${r.name}`),
      ...listenerKeys.map((k) => `listener:${k}`),
    ]);
    this.history.keep(keys);
    const names = new Set(rules.map((r) => r.name));
    this.alarms.keep(names);
    this.stats.applyClients(clients.capacity, names);
    if (clients.names === "off") this.nameClients(null);
    else if (this.names === null) this.nameClients(new ClientNames(this.lookup, { now: this.now }));
  }

  /** Reverse-DNS names of clients (`[server] client_names`), or null when off. */
  names: ClientNames | null = null;
  /** How names are found (tests give their own). */
  lookup: ReverseLookup = reverseDns();

  /** Names clients (or stops naming them). */
  nameClients(names: ClientNames | null): void {
    if (this.names !== names) this.names?.stop();
    this.names = names;
  }

  /** A session starts (before it is counted). */
  sessionStarted(rule: string, listenerKey: string, clientIp: string): void {
    const now = this.now();
    this.names?.want(clientIp);
    this.history.sessionStarted(`rule:${rule}`, clientIp, now, this.stats.rules.get(rule));
    this.history.sessionStarted(
      `listener:${listenerKey}`,
      clientIp,
      now,
      this.stats.listeners.get(listenerKey),
    );
  }

  /** A client was refused (before it is counted). */
  refused(rule: string | null, listenerKey: string, clientIp: string): void {
    const now = this.now();
    if (rule !== null) this.names?.want(clientIp);
    if (rule !== null) this.history.touched(`rule:${rule}`, now, this.stats.rules.get(rule));
    this.history.touched(`listener:${listenerKey}`, now, this.stats.listeners.get(listenerKey));
  }

  /** Closed minutes of every rule and listener, to keep across a restart. */
  exportHistory(): Record<string, Bucket[]> {
    return this.history.export(this.now(), (key) => this.#counters(key));
  }

  /** Puts back minutes kept across a restart, for the rules and listeners in `keys`. */
  importHistory(
    saved: Readonly<Record<string, readonly Bucket[]>>,
    keys: ReadonlySet<string>,
  ): void {
    const wanted = Object.fromEntries(Object.entries(saved).filter(([key]) => keys.has(key)));
    this.history.import(wanted, this.now());
  }

  /** Starts evaluating every second. */
  start(): void {
    this.#timer = setInterval(() => this.tick(), TICK_MS);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.names?.stop();
  }

  /** Closes minutes that ended and logs alarms raised; returns them. */
  tick(): AlarmEvent[] {
    const now = this.now();
    this.history.advance(now, (key) => this.#counters(key));
    const raised = this.alarms.evaluate(this.#rules, (rule) => {
      const c = this.stats.rules.get(rule);
      return {
        firstSession: c?.firstSession ?? null,
        lastSession: c?.lastSession ?? null,
        errors: c?.errors ?? 0,
      };
    }, now);
    for (const alarm of raised) this.#logAlarm(alarm);
    return raised;
  }

  #counters(key: string) {
    const at = key.indexOf(":");
    const name = key.slice(at + 1);
    return key.startsWith("rule:") ? this.stats.rules.get(name) : this.stats.listeners.get(name);
  }

  #logAlarm(alarm: AlarmEvent): void {
    const what = `${alarm.kind} alarms of rule ${alarm.rule}`;
    if (!this.gate.pass(`alarm ${alarm.rule} ${alarm.kind}`, what, this.monotonic())) return;
    // `alarm`, not `event`: with `event` and `client` a line would read as a session event.
    const fields = { alarm: alarm.kind, rule: alarm.rule, detail: alarm.detail };
    switch (alarm.kind) {
      case "first-traffic": {
        const client = this.stats.rules.get(alarm.rule)?.firstClient ?? "?";
        this.log.info("first traffic for rule {rule}: {client} at {first_session}", {
          ...fields,
          client,
          first_session: new Date(alarm.at).toISOString(),
        });
        break;
      }
      case "quiet": {
        const rule = this.#rules.find((r) => r.name === alarm.rule);
        this.log.warn("rule {rule} is quiet: {detail} (alarm_quiet {quiet})", {
          ...fields,
          quiet: rule?.action === "pass" && rule.alarmQuietMs
            ? formatDuration(rule.alarmQuietMs)
            : "",
        });
        break;
      }
      case "resumed":
        this.log.info("rule {rule} has traffic again", fields);
        break;
      case "errors":
        this.log.warn("rule {rule}: {detail} (alarm_errors)", fields);
        break;
    }
  }
}
