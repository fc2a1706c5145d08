/**
 * The live sessions of every protocol, and the one place a session's life is
 * accounted for: its counters, its log events, its admission slot. Relays
 * report through the {@linkcode SessionHandle} that {@linkcode SessionTracker.open}
 * gives them; shutdown and reload end sessions through the tracker.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { PassRule } from "../config/types.ts";
import { logSessionEvent, type SessionEvent } from "../log/events.ts";
import type { EventGate } from "../log/rate_limit.ts";
import { coarseNow } from "../relay/clock.ts";
import type { Admitted } from "../relay/host.ts";
import type { Admission } from "../relay/limits.ts";
import type {
  Closable,
  Direction,
  DisconnectReason,
  DropReason,
  SessionHandle,
  SessionSetup,
} from "../relay/session.ts";
import type { ClientEntry, ClientLedger } from "../status/ledger.ts";
import { countBytes, countDrop, type Counters, countStart, type Stats } from "../status/stats.ts";

/** One live session as the tracker keeps it. */
export class TrackedSession implements SessionHandle {
  /** Wall-clock start (epoch ms). */
  readonly startedAt: number;
  /** Monotonic time of the last delivered byte or datagram. */
  lastActivity = coarseNow();
  bytesUp = 0;
  bytesDown = 0;
  datagramsUp = 0;
  datagramsDown = 0;
  /** The bouncer's own `ip:port` toward the target, once connected. */
  local: string | null = null;
  /** The target: as configured until connected, then the one it got. */
  target: string;
  /** Whether a reload removed its rule or listener (it goes on until it ends or is drained). */
  draining = false;
  /** Closed as revoked (a close sent to a worker takes a moment to end it): not revoked twice. */
  revoked = false;
  /** When a reload left it draining with a deadline: the wall-clock end (epoch ms). */
  drainDeadline: number | null = null;
  #ended = false;
  /** `local remote` of its TCP connection toward the target. */
  #connection: string | null = null;
  readonly setup: SessionSetup;
  readonly rule: PassRule;
  readonly #admission: Admission;
  /** The rule's ledger as the session started, and the client's entry (bytes go there too). */
  readonly #ledger: ClientLedger | null;
  readonly #client: ClientEntry | null;

  constructor(
    readonly tracker: SessionTracker,
    admitted: Admitted,
    readonly session: Closable,
    readonly counters: Counters[],
    startedAt = tracker.clock(),
  ) {
    this.startedAt = startedAt;
    this.#ledger = tracker.stats.rules.get(admitted.rule.name)?.clients ?? null;
    this.#client =
      this.#ledger?.started(admitted.setup.clientIp, admitted.setup.listen, startedAt) ??
        null;
    this.setup = admitted.setup;
    this.target = admitted.setup.target;
    this.rule = admitted.rule;
    this.#admission = admitted.admission;
  }

  connected(ends: { target: string; local: string; remote: string }): void {
    const { target, local, remote } = ends;
    this.local = local;
    this.target = target;
    if (this.setup.protocol === "tcp") {
      this.#connection = `${local} ${remote}`;
      this.tracker.ownConnections.add(this.#connection);
    }
    const counters = this.tracker.stats.ofTarget(this.rule.name, target);
    countStart([counters], this.setup.client, this.tracker.clock());
    this.counters.push(counters);
    this.tracker.targets?.joined(target);
    if (this.rule.log.has("connect")) this.#event({ event: "connect", local });
  }

  attemptFailed(target: string, error: string): void {
    this.tracker.stats.ofTarget(this.rule.name, target).errors++;
    if (!this.rule.log.has("error")) return;
    const what = `connect failures to ${target} (rule ${this.rule.name})`;
    if (
      !this.tracker.gate.pass(
        `attempt ${this.rule.name} ${target} ${error}`,
        what,
        this.tracker.monotonic(),
      )
    ) {
      return;
    }
    this.#event({ event: "error", target, error: `${error}; trying the next target` });
  }

  delivered(direction: Direction, bytes: number): void {
    this.lastActivity = coarseNow();
    const udp = this.setup.protocol === "udp";
    if (direction === "up") {
      this.bytesUp += bytes;
      if (udp) this.datagramsUp++;
      countBytes(this.counters, bytes, 0);
      if (this.#client) this.#client.bytesUp += bytes;
    } else {
      this.bytesDown += bytes;
      if (udp) this.datagramsDown++;
      countBytes(this.counters, 0, bytes);
      if (this.#client) this.#client.bytesDown += bytes;
    }
    if (this.rule.log.has("data")) this.#event({ event: "data", bytes, direction });
  }

  error(message: string): void {
    for (const c of this.counters) c.errors++;
    if (!this.rule.log.has("error")) return;
    const what = `errors "${message}" (rule ${this.rule.name})`;
    if (
      !this.tracker.gate.pass(`error ${this.rule.name} ${message}`, what, this.tracker.monotonic())
    ) {
      return;
    }
    this.#event({ event: "error", error: message });
  }

  dropped(reason: DropReason, message?: string): void {
    countDrop(this.counters, reason);
    if (message !== undefined) this.error(message);
  }

  ended(reason: DisconnectReason, error?: string): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.local !== null && this.rule.log.has("disconnect")) {
      const udp = this.setup.protocol === "udp";
      this.#event({
        event: "disconnect",
        bytes_up: this.bytesUp,
        bytes_down: this.bytesDown,
        ...(udp ? { datagrams_up: this.datagramsUp, datagrams_down: this.datagramsDown } : {}),
        duration_ms: this.tracker.clock() - this.startedAt,
        reason,
        ...(error !== undefined ? { error } : {}),
      });
    }
    this.#admission.release();
    for (const c of this.counters) c.active--;
    // A reload that removed the rule gave it a new ledger: the old one hears the end, not that.
    if (this.#client) this.#ledger?.ended(this.#client, this.tracker.clock());
    if (this.#connection !== null) this.tracker.ownConnections.delete(this.#connection);
    if (this.local !== null) this.tracker.targets?.left(this.target);
    this.tracker.forget(this);
  }

  #event(fields: Pick<SessionEvent, "event"> & Partial<SessionEvent>): void {
    const { setup } = this;
    logSessionEvent(this.tracker.log, {
      action: "pass",
      rule: this.rule.name,
      protocol: setup.protocol,
      client: setup.client,
      listen: setup.listen,
      target: this.target,
      ...fields,
    }, this.rule);
  }
}

/** Every live session. */
export class SessionTracker {
  readonly #live = new Set<TrackedSession>();
  #waiters: (() => void)[] = [];
  /** `local remote` (`ip:port ip:port`) of portbounce's own live TCP connections toward targets. */
  readonly ownConnections = new Set<string>();

  constructor(
    readonly log: Logger,
    readonly stats: Stats,
    readonly gate: EventGate,
    /** Told which target each session is on (for least-sessions); absent in unit tests. */
    readonly targets?: { joined(target: string): void; left(target: string): void },
    /** Told when sessions start (history); absent in unit tests. */
    readonly monitor?: {
      sessionStarted(rule: string, listenerKey: string, clientIp: string): void;
    },
    /** The wall clock of session times (tests move it). */
    readonly clock: () => number = Date.now,
    /** The monotonic clock of rate-limited events (tests move it). */
    readonly monotonic: () => number = () => performance.now(),
  ) {}

  /**
   * Starts accounting for an admitted session, which started now or, when a
   * worker reports it, at `startedAt` (epoch ms).
   */
  open(admitted: Admitted, session: Closable, startedAt = this.clock()): TrackedSession {
    const { setup, rule } = admitted;
    const counters = this.stats.of(rule.name, setup.listenerKey);
    this.monitor?.sessionStarted(rule.name, setup.listenerKey, setup.clientIp);
    countStart(counters, setup.client, startedAt);
    const tracked = new TrackedSession(this, admitted, session, counters, startedAt);
    this.#live.add(tracked);
    return tracked;
  }

  /** Called by a session's `ended`. */
  forget(session: TrackedSession): void {
    this.#live.delete(session);
    if (this.#live.size === 0) {
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    }
  }

  /** Whether a connection from `client` to `listen` is one of portbounce's own toward a target. */
  isOwnConnection(client: string, listen: string): boolean {
    return this.ownConnections.has(`${client} ${listen}`);
  }

  /** Whether `session` has not ended yet. */
  isLive(session: TrackedSession): boolean {
    return this.#live.has(session);
  }

  /** Number of live sessions. */
  get size(): number {
    return this.#live.size;
  }

  /** The live sessions, oldest first. */
  list(): TrackedSession[] {
    return [...this.#live];
  }

  /** Closes every live session (or those `where` selects) with `reason`. */
  closeAll(reason: DisconnectReason, where: (s: TrackedSession) => boolean = () => true): void {
    for (const tracked of [...this.#live]) {
      if (where(tracked)) tracked.session.close(reason);
    }
  }

  /** Resolves once no session is live. */
  whenEmpty(): Promise<void> {
    if (this.#live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
