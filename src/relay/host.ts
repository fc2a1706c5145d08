/**
 * What a relay listener needs from the daemon around it, and what the daemon
 * can ask of a listener. The relay never sees counters, logs or the session
 * list: it decides, refuses and opens sessions through a {@linkcode RelayHost}.
 *
 * @module
 */
import type { IpAddress } from "../config/network.ts";
import type { PassRule, Protocol } from "../config/types.ts";
import type { ListenerPlan, Target } from "../rules/plan.ts";
import type { Bandwidth } from "./bandwidth.ts";
import type { Decision, Refusal } from "./admission.ts";
import type { Dialer } from "./dial.ts";
import type { Closable, SessionHandle, SessionSetup } from "./session.ts";
import type { Admission } from "./limits.ts";
import type { Sweeper } from "./sweeper.ts";

/** Timings a test may shorten; the defaults are what operators get. */
export interface RelayTuning {
  /** Quiet time after which a UDP flow parks on its small buffer. */
  readonly udpParkAfterMs: number;
  /** How often idle and stall deadlines of TCP sessions are checked. */
  readonly sweepIntervalMs: number;
  /** While draining, a UDP flow ends once quiet this long. */
  readonly udpDrainGraceMs: number;
  /** Window of the rate limits on refusals and errors in the log. */
  readonly eventWindowMs: number;
}

/** The tuning operators get. */
export const DEFAULT_TUNING: RelayTuning = {
  udpParkAfterMs: 10_000,
  sweepIntervalMs: 500,
  udpDrainGraceMs: 1_000,
  eventWindowMs: 10_000,
};

/** Where a refused client came from and went to. */
export interface RefusalPlace {
  readonly protocol: Protocol;
  readonly client: string;
  /** The client's address alone, or the raw text when it did not parse. */
  readonly clientIp: string;
  readonly listen: string;
}

/** Target choice, health and bandwidth, as relays use them. */
export interface TargetPool {
  /** The order in which a new session from `client` tries `targets`. */
  order(rule: PassRule, targets: readonly Target[], client: string): Target[];
  /** A connect to `target` succeeded. */
  succeeded(target: Target): void;
  /** A connect to `target` failed, and why. */
  failed(target: Target, error: string): void;
  /** The rule's bandwidth budgets, each direction, or null without a limit. */
  bandwidth(rule: PassRule): { readonly up: Bandwidth; readonly down: Bandwidth } | null;
}

/** An admitted session before its relay starts. */
export interface Admitted {
  readonly setup: SessionSetup;
  readonly rule: PassRule;
  readonly admission: Admission;
}

/** The daemon, as relay listeners see it. */
export interface RelayHost {
  /**
   * Decides a new client of `plan`'s listener: first matching rule (for the
   * local address it reached, when known), then its limits.
   */
  decide(
    plan: ListenerPlan,
    client: IpAddress | null,
    local?: IpAddress | null,
  ): Decision | Promise<Decision>;
  /** Whether a connection from `client` to `listen` (`ip:port` both) is one of portbounce's own. */
  isOwnConnection(client: string, listen: string): boolean;
  /** Whether a connection (from `local`) to `remote` reached one of portbounce's own TCP listeners. */
  isOwnListener(remote: Deno.NetAddr, local: Deno.NetAddr): boolean;
  /** Counts a refusal and logs it (rate-limited per client and cause). */
  refuse(listenerKey: string, refusal: Refusal, place: RefusalPlace): void;
  /** Starts tracking an admitted session; `session` is how the daemon can end it. */
  open(admitted: Admitted, session: Closable): SessionHandle;
  /** A listener's accept or receive started failing (logged once per burst). */
  listenerFailing(listenerKey: string, verb: "accept" | "receive", error: unknown): void;
  /** ... and works again after `failures` failures. */
  listenerRecovered(listenerKey: string, verb: "accept" | "receive", failures: number): void;
  readonly dialer: Dialer;
  readonly tuning: RelayTuning;
  /** Checks TCP sessions' idle and stall deadlines. */
  readonly sweeper: Sweeper;
  readonly targets: TargetPool;
}

/**
 * A host that decides at once. UDP listeners need one: a datagram is decided
 * before the next is read. (A worker isolate, which serves TCP only, may have
 * to ask the main isolate about limits.)
 */
export interface SyncRelayHost extends RelayHost {
  decide(plan: ListenerPlan, client: IpAddress | null, local?: IpAddress | null): Decision;
}

/** A bound listener of either protocol, as the daemon drives it. */
export interface RelayListener {
  readonly protocol: Protocol;
  /** The plan it serves now. */
  readonly plan: ListenerPlan;
  /** The address actually bound (the real port when the plan asked for port 0). */
  readonly address: Deno.NetAddr;
  /** Starts accepting or receiving. */
  serve(): void;
  /** New sessions are decided by `plan` from now on (a reload kept this listener). */
  replacePlan(plan: ListenerPlan): void;
  /**
   * Takes no new sessions. TCP closes its socket at once; UDP keeps it while
   * its flows still need it for replies, then closes it.
   */
  stopAccepting(): void;
  /** Resolves once the socket is closed. */
  readonly closed: Promise<void>;
}
