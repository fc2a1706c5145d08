/**
 * The listeners of one isolate: bound all or none at start, then moved by
 * each reload to the new plan (kept, added, removed), with UDP listeners
 * that retire while their flows drain. The main isolate's engine and every
 * worker keep theirs in one of these; only how a listener is opened differs
 * (the main isolate binds the planned address, a worker joins the port the
 * main isolate bound).
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import type { RelayListener } from "../relay/host.ts";
import { sleep } from "../relay/timers.ts";
import { UdpRelayListener } from "../relay/udp/listener.ts";
import { diffListeners } from "../rules/diff.ts";
import type { ListenerPlan } from "../rules/plan.ts";

/** A listener that could not be bound, and why. */
export interface BindFailure {
  readonly key: string;
  readonly error: string;
}

/** Why a listener could not be opened; `addrInUse` when another socket holds its port. */
export interface BindRefusal {
  readonly error: string;
  readonly addrInUse: boolean;
}

/**
 * When a listener is opened: at start (`first`), beside a running instance
 * that holds the port (`beside`, a takeover), or once the listeners a
 * reload removed have let go of their ports (`retry`).
 */
export type OpenMoment = "first" | "beside" | "retry";

/** Opens one planned listener (on `port` instead of the plan's 0, for a port-0 pair). */
export type OpenListener = (
  plan: ListenerPlan,
  moment: OpenMoment,
  port?: number,
) => RelayListener | BindRefusal;

/** What a reload did to the listeners. */
export interface ListenerChanges {
  readonly added: readonly string[];
  readonly kept: readonly ListenerPlan[];
  readonly removed: readonly string[];
  readonly failed: readonly BindFailure[];
}

/** The listeners an isolate serves. */
export class ListenerSet {
  /** Listeners taking new sessions, by key. */
  readonly #live = new Map<string, RelayListener>();
  /** UDP listeners removed by a reload whose flows still drain through them. */
  readonly #retiring = new Map<string, UdpRelayListener>();
  /** Removed TCP listeners whose socket is not yet gone (see `#released`). */
  readonly #releasing = new Set<Promise<void>>();
  /** Listeners the last reload could not bind, with why. */
  readonly #failed = new Map<string, { plan: ListenerPlan; error: string }>();
  /** Listeners to bind once a running instance lets go of them (a takeover). */
  #waiting: ListenerPlan[] = [];
  #serving = false;
  /** Stopped accepting for good: a listener bound after (a reload's retry) is closed at once. */
  #stopped = false;
  /** The ports TCP listeners are bound to; cleared whenever the listeners change. */
  #tcpPortSet: Set<number> | null = null;

  /**
   * @param open how this isolate opens a listener
   * @param portWanted a retiring UDP listener's port is wanted by a new one: its
   *   flows end now (they could not reply any more)
   */
  constructor(
    readonly open: OpenListener,
    readonly portWanted: (key: string) => void = () => {},
  ) {}

  /**
   * Binds every listener of `plan`. If any fails, closes those already bound
   * and returns every failure: nothing is left half-open. A listener whose
   * port `heldElsewhere` (a running instance) waits for {@linkcode bindWaiting}.
   */
  bindAll(
    plan: readonly ListenerPlan[],
    heldElsewhere: (plan: ListenerPlan) => boolean = () => false,
  ): BindFailure[] {
    const failures: BindFailure[] = [];
    const paired = pairPortZero(plan);
    for (const listenerPlan of plan) {
      if (this.#live.has(listenerPlan.key)) continue; // Bound as the partner of another.
      const partner = paired.get(listenerPlan);
      const held = heldElsewhere(listenerPlan);
      const opened = partner
        ? this.#openPair(listenerPlan, partner)
        : this.open(listenerPlan, held ? "beside" : "first");
      if ("error" in opened && opened.addrInUse && held) {
        this.#waiting.push(listenerPlan);
        continue;
      }
      if ("error" in opened) {
        failures.push({ key: listenerPlan.key, error: opened.error });
        continue;
      }
      for (const listener of Array.isArray(opened) ? opened : [opened]) {
        this.#live.set(listener.plan.key, listener);
      }
    }
    this.#tcpPortSet = null;
    if (failures.length > 0) {
      for (const listener of this.#live.values()) listener.stopAccepting();
      this.#live.clear();
    }
    return failures;
  }

  /**
   * Binds the listeners that waited for a running instance to let go of their
   * ports (it has), trying every millisecond for up to `patienceMs` while it
   * finishes closing them. Returns those that still could not be bound.
   */
  async bindWaiting(patienceMs: number, now: () => number): Promise<BindFailure[]> {
    const deadline = now() + patienceMs;
    // A socket closed with a receive or accept pending lets go of its port a moment later:
    // try every millisecond, since each one is a datagram refused.
    for (;;) {
      const failures: BindFailure[] = [];
      const still: ListenerPlan[] = [];
      for (const plan of this.#waiting) {
        const opened = this.open(plan, "first");
        if ("error" in opened) {
          if (opened.addrInUse) still.push(plan);
          else failures.push({ key: plan.key, error: opened.error });
          continue;
        }
        this.#add(opened);
      }
      this.#waiting = still;
      if (still.length === 0 || now() >= deadline) {
        this.#waiting = [];
        return [
          ...failures,
          ...still.map((plan) => ({
            key: plan.key,
            error: `address already in use (still, ${
              formatDuration(patienceMs)
            } after the running instance let go of it)`,
          })),
        ];
      }
      await sleep(1);
    }
  }

  /**
   * Moves to `plan`: a listener whose (protocol, address, port) stays keeps
   * its socket and takes the new plan; removed ones stop accepting before
   * added ones bind, so an address that changes on the same port moves over
   * once the old socket is gone. Resolves once every removed TCP port is free.
   */
  async apply(plan: readonly ListenerPlan[]): Promise<ListenerChanges> {
    const diff = diffListeners(this.#live.keys(), plan);
    this.#failed.clear();
    for (const next of diff.kept) this.#live.get(next.key)!.replacePlan(next);

    const added: string[] = [];
    const deferred: ListenerPlan[] = [];
    const bind = (next: ListenerPlan, moment: OpenMoment): void => {
      const retiring = this.#retiring.get(next.key);
      if (retiring?.revive(next)) {
        this.#retiring.delete(next.key);
        this.#live.set(next.key, retiring);
        added.push(next.key);
        return;
      }
      const opened = this.open(next, moment);
      if ("error" in opened) {
        // Maybe a listener being removed holds the port (127.0.0.1:P becoming *:P).
        if (moment === "first" && opened.addrInUse) return void deferred.push(next);
        this.#failed.set(next.key, { plan: next, error: opened.error });
        return;
      }
      this.#add(opened);
      added.push(next.key);
    };
    for (const next of diff.added) bind(next, "first");
    for (const key of diff.removed) {
      const listener = this.#live.get(key)!;
      this.#live.delete(key);
      listener.stopAccepting();
      if (listener.protocol === "tcp") {
        const closed = listener.closed.then(() => void this.#releasing.delete(closed));
        this.#releasing.add(closed);
      }
      if (!(listener instanceof UdpRelayListener)) continue;
      const neededNow = deferred.some((p) =>
        p.protocol === listener.protocol && p.port === listener.address.port
      );
      if (neededNow) {
        this.portWanted(key);
        listener.closeSocket();
      } else {
        this.#retiring.set(key, listener);
        listener.closed.then(() => {
          if (this.#retiring.get(key) === listener) this.#retiring.delete(key);
        });
      }
    }
    // A closed listener frees its port only once its pending accept is cancelled.
    if (deferred.length > 0) await this.#released();
    for (const next of deferred) bind(next, "retry");
    this.#tcpPortSet = null;
    // The changes say a removed port is free: make it true before they are returned.
    await this.#released();
    return {
      added,
      kept: diff.kept,
      removed: diff.removed,
      failed: this.failedPlans().map(({ plan, error }) => ({ key: plan.key, error })),
    };
  }

  #add(listener: RelayListener): void {
    if (this.#stopped) {
      listener.stopAccepting();
      if (listener instanceof UdpRelayListener) listener.closeSocket();
      return;
    }
    this.#live.set(listener.plan.key, listener);
    this.#tcpPortSet = null;
    if (this.#serving) listener.serve();
  }

  /**
   * Resolves once the sockets of removed TCP listeners are closed: closing a
   * listener with a pending accept frees its port only when that accept is
   * cancelled, a turn of the event loop later.
   */
  async #released(): Promise<void> {
    await Promise.all(this.#releasing);
  }

  /** Binds two port-0 listeners on one port, trying a few ports if the second is taken. */
  #openPair(first: ListenerPlan, second: ListenerPlan): RelayListener[] | BindRefusal {
    for (let attempt = 0;; attempt++) {
      const a = this.open(first, "first");
      if ("error" in a) return a;
      const b = this.open(second, "first", a.address.port);
      if (!("error" in b)) return [a, b];
      a.stopAccepting();
      if (a instanceof UdpRelayListener) a.closeSocket();
      if (!b.addrInUse || attempt === 9) return b;
    }
  }

  /** Starts accepting on every listener (and on those bound later). */
  serve(): void {
    this.#serving = true;
    for (const listener of this.#live.values()) listener.serve();
  }

  /** Stops accepting on every listener; resolves once the TCP sockets are closed. */
  stopAccepting(): Promise<void> {
    this.#stopped = true;
    const listeners = [...this.#live.values()];
    for (const listener of listeners) listener.stopAccepting();
    // UDP sockets may stay open for their flows' replies; only TCP ones must be gone.
    return Promise.all(listeners.filter((l) => l.protocol === "tcp").map((l) => l.closed))
      .then(() => {});
  }

  /** Closes every UDP socket now, retiring ones too (their flows cannot reply any more). */
  closeUdpSockets(): void {
    for (const listener of [...this.#live.values(), ...this.#retiring.values()]) {
      if (listener instanceof UdpRelayListener) listener.closeSocket();
    }
  }

  /** The listener taking new sessions for `key`, if any. */
  get(key: string): RelayListener | undefined {
    return this.#live.get(key);
  }

  /** Whether a listener takes new sessions for `key`. */
  has(key: string): boolean {
    return this.#live.has(key);
  }

  /** The listeners taking new sessions, in plan order. */
  values(): IterableIterator<RelayListener> {
    return this.#live.values();
  }

  /** How many listeners take new sessions. */
  get size(): number {
    return this.#live.size;
  }

  /** The plans of the listeners the last reload could not bind, and why. */
  failedPlans(): { plan: ListenerPlan; error: string }[] {
    return [...this.#failed.values()];
  }

  /** The ports TCP listeners are bound to (for the loop guard: a cheap first test). */
  tcpPorts(): Set<number> {
    return this.#tcpPortSet ??= new Set(
      [...this.#live.values()].filter((l) => l.protocol === "tcp").map((l) => l.address.port),
    );
  }
}

/**
 * TCP and UDP listeners of one rule on the same address and port 0: the
 * system picks a port for the first, the second takes the same one (a
 * `forward --both 0=...` gives one port for both).
 */
function pairPortZero(plans: readonly ListenerPlan[]): Map<ListenerPlan, ListenerPlan> {
  const pairs = new Map<ListenerPlan, ListenerPlan>();
  const zero = plans.filter((p) => p.port === 0);
  for (const first of zero) {
    if (pairs.has(first)) continue;
    const second = zero.find((p) =>
      p !== first && !pairs.has(p) && p.protocol !== first.protocol &&
      p.address === first.address && p.bindings[0]?.rule === first.bindings[0]?.rule
    );
    if (second) {
      pairs.set(first, second);
      pairs.set(second, first);
    }
  }
  return pairs;
}
