/**
 * The messages between the main isolate and its workers. Workers accept TCP
 * connections on the same ports (SO_REUSEPORT) and relay them; the main
 * isolate keeps everything that must be one: the rules' limits, the session
 * list, counters and history, the log, health checks, reloads. A worker
 * reports each session's life as events, in order, batched.
 *
 * @module
 */
import type { BlockReason, DisconnectReason, SessionSetup } from "../relay/session.ts";
import type { RefusalPlace } from "../relay/host.ts";
import type { SharedBudget } from "../relay/bandwidth.ts";
import type { TargetStatus } from "../relay/health.ts";
import type { BindFailure } from "../server/listener_set.ts";
import type { PlanInputs } from "../server/rule_file.ts";

/** The address a listener of the plan was bound to in the main isolate (key: plan key). */
export type BoundAddresses = Record<string, { hostname: string; port: number }>;

/** What a worker needs to serve a rule set. */
export interface WorkerRules {
  readonly inputs: PlanInputs;
  readonly addresses: BoundAddresses;
  readonly budgets: Record<string, SharedBudget>;
  /** Milliseconds between idle and stall checks (tests shorten it). */
  readonly sweepIntervalMs: number;
  /** This isolate's share of `[server] buffer_memory`. */
  readonly bufferBytes: number;
  /** Which rule set this is (0 at start, one more per reload): sessions say which decided them. */
  readonly generation: number;
}

/** Main to worker. */
export type ToWorker =
  | {
    readonly t: "start";
    readonly rules: WorkerRules;
    readonly health: TargetStatus[];
    /** The main isolate's shared clock when it sent this (see `setSharedClock`). */
    readonly clock: number;
  }
  /** Every isolate has bound: start accepting. */
  | { readonly t: "serve" }
  | { readonly t: "reload"; readonly rules: WorkerRules }
  | {
    readonly t: "admitted";
    readonly request: number;
    /** Null: admitted; else the limit that refused it. */
    readonly refused: BlockReason | null;
  }
  | { readonly t: "close"; readonly id: number; readonly reason: DisconnectReason }
  | { readonly t: "health"; readonly status: TargetStatus }
  | { readonly t: "stop" };

/** One event of a worker's batch. */
export type WorkerEvent =
  | {
    readonly t: "open";
    readonly id: number;
    readonly setup: SessionSetup;
    readonly rule: string;
    /** The admission the main isolate granted (rules with limits), or null. */
    readonly admission: number | null;
    /** When it started (epoch ms): events reach the main isolate a little later. */
    readonly at: number;
    /** The rule set that decided it (`WorkerRules.generation`). */
    readonly generation: number;
  }
  | {
    readonly t: "connected";
    readonly id: number;
    readonly target: string;
    readonly local: string;
    readonly remote: string;
  }
  | { readonly t: "attempt"; readonly id: number; readonly target: string; readonly error: string }
  | { readonly t: "bytes"; readonly id: number; readonly up: number; readonly down: number }
  | { readonly t: "error"; readonly id: number; readonly message: string }
  | {
    readonly t: "ended";
    readonly id: number;
    readonly reason: DisconnectReason;
    readonly error?: string;
  }
  | {
    readonly t: "refuse";
    readonly listenerKey: string;
    readonly rule: string | null;
    readonly reason: BlockReason;
    readonly place: RefusalPlace;
  }
  | {
    readonly t: "admit";
    readonly request: number;
    readonly rule: string;
    readonly client: string;
  }
  | { readonly t: "target"; readonly target: string; readonly error: string | null }
  | {
    readonly t: "listener";
    readonly key: string;
    readonly verb: "accept" | "receive";
    /** The error that started a burst of failures, or null when it works again. */
    readonly error: string | null;
    readonly failures: number;
  };

/** Worker to main. */
export type FromWorker =
  /** Loaded and listening for messages (those sent before would be lost). */
  | { readonly t: "ready" }
  | { readonly t: "bound"; readonly failures: BindFailure[] }
  | { readonly t: "reloaded"; readonly failures: BindFailure[] }
  | { readonly t: "stopped" }
  | { readonly t: "events"; readonly events: WorkerEvent[] };
