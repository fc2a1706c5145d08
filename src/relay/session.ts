/**
 * The contract between a relay engine (TCP or UDP) and the daemon around it.
 * A relay reports what happens to a session through one {@linkcode SessionHandle};
 * the daemon turns that into counters, log events and the live-session list,
 * and can end any session through its {@linkcode Closable}. Nothing here does I/O.
 *
 * @module
 */
import type { Protocol } from "../config/types.ts";

/** Why a session ended. */
export type DisconnectReason =
  | "client-closed"
  | "target-closed"
  | "idle-timeout"
  /** The target ended the connection abortively (RST): an error. */
  | "reset"
  /**
   * The client went away abortively (reset, or gone while being written to: a
   * cancelled download). A normal end, as `client-closed`, not an error.
   */
  | "client-reset"
  /** A write made no progress for the rule's `stall_timeout`. */
  | "stalled"
  | "error"
  /** Its listener or rule was removed by a reload, or it was quiet while the daemon stopped. */
  | "drained"
  /** A reload's rules refuse its client (`reload_enforces_rules`). */
  | "revoked"
  /** A takeover's new instance took its UDP port; the client's next datagram starts a flow there. */
  | "handed-over"
  | "shutdown";

/** Why a new client was refused. */
export type BlockReason =
  | "rule"
  | "no-matching-rule"
  | "max_sessions"
  | "max_sessions_per_client"
  | "throttle"
  /** A UDP listener that is draining takes no new sessions. */
  | "draining"
  /** The client is portbounce itself: a target led back to one of its listeners. */
  | "loop";

/** Why a UDP datagram was not relayed, beyond refusals of whole sessions. */
export type DropReason =
  /** A reply came from an address other than the target (Barefoot udp.connectdst). */
  | "not-from-target"
  /** A datagram arrived while its session was still opening, and the queue was full. */
  | "queue-full"
  /** A datagram did not fit the receive buffer (see the UDP session on parked sessions). */
  | "truncated"
  /** Sending it failed (target unreachable, buffer full, ...). */
  | "send-failed"
  /** It would have gone beyond the rule's bandwidth. */
  | "bandwidth";

/** Direction of relayed bytes: `up` is client to target, `down` target to client. */
export type Direction = "up" | "down";

/** Something the daemon can end: a live session. */
export interface Closable {
  /** Ends the session now; the first reason given is the one reported. */
  close(reason: DisconnectReason): void;
  /**
   * UDP flows have no end of stream: this one ends (as `drained`) once it has
   * been quiet for `graceMs`. TCP sessions end by themselves and have no such method.
   */
  drainWhenQuiet?(graceMs: number): void;
}

/** Who and where a new session is, as its log events and the session list name them. */
export interface SessionSetup {
  readonly protocol: Protocol;
  /** The listener it arrived on (`tcp 127.0.0.1:80`). */
  readonly listenerKey: string;
  /** `ip:port` of the client (IPv4-mapped addresses shown as IPv4). */
  readonly client: string;
  /** The client's address alone, as matched (`198.51.100.7`). */
  readonly clientIp: string;
  /** `ip:port` the client reached. */
  readonly listen: string;
  /** The target as configured (`db.example:5432`). */
  readonly target: string;
}

/**
 * What a relay tells the daemon about one admitted session. `ended` must be
 * called exactly once, last; it releases the session's admission slot.
 */
export interface SessionHandle {
  /**
   * The session reaches its target: `target` as configured (`db:5432`),
   * `local` the bouncer's own `ip:port` toward it, `remote` the target's
   * address as connected.
   */
  connected(
    ends: { readonly target: string; readonly local: string; readonly remote: string },
  ): void;
  /** One of several targets failed to connect and the next is tried (logged, not counted). */
  attemptFailed(target: string, error: string): void;
  /** `bytes` were delivered in `direction` (written to the far side, not merely read). */
  delivered(direction: Direction, bytes: number): void;
  /** A connect or I/O error, logged as an `error` event and counted. */
  error(message: string): void;
  /** A datagram was not relayed; `message`, when given, is logged as an error. */
  dropped(reason: DropReason, message?: string): void;
  /** The session is over: logs `disconnect` (when it had connected) and releases everything. */
  ended(reason: DisconnectReason, error?: string): void;
}
