/**
 * One UDP flow: a client (address, port) on one listener, with its own
 * upstream socket (an ephemeral port) toward the target. Replies arriving on
 * that socket from the target, and only from the target (Barefoot's
 * `udp.connectdst: yes`), go back to the client from the listening socket.
 *
 * Memory: a pending `receive()` holds its buffer, about 60 KiB for a 64 KiB
 * buffer, which would make 10,000 idle flows cost 600 MiB (and ordinary
 * 64 KiB buffers, once freed, are not given back to the system). So:
 * - 64 KiB receive buffers are lent from one pool and count against the
 *   relay's buffer memory budget (`[server] buffer_memory`); while in the
 *   pool their memory is handed back to the system (see `BufferPool`);
 * - a flow quiet for `udpParkAfterMs` (10 s) is *parked*: its receive is
 *   woken by an empty datagram the socket sends to itself and re-issued with
 *   its own 4 KiB buffer, and the large one goes back to the pool. Any traffic
 *   unparks it.
 * A reply that fills a 4 KiB buffer (the flow was parked, or the budget
 * was spent) cannot be held whole: it is counted as `truncated` and
 * logged as an error, never relayed cut short. Otherwise replies of up to
 * 65,535 bytes are relayed whole.
 *
 * @module
 */
import { parseClientAddress } from "../../config/network.ts";
import { coarseNow } from "../clock.ts";
import type { PassRule } from "../../config/types.ts";
import { formatTarget, type SourcePlan, type Target } from "../../rules/plan.ts";
import type { Bandwidth } from "../bandwidth.ts";
import { BufferPool, relayBuffers } from "../buffer_pool.ts";
import type { Dialer } from "../dial.ts";
import { describeIoError } from "../errors.ts";
import type { RelayTuning } from "../host.ts";
import { peerText } from "../peer.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import type { Closable, DisconnectReason, SessionHandle } from "../session.ts";

/** Receive buffer while the flow moves traffic: any datagram fits. */
export const ACTIVE_BUFFER = 65_536;
/** Receive buffer while parked. */
export const PARKED_BUFFER = 4_096;
/**
 * Large receive buffers, lent while a flow moves traffic (they count against
 * the memory budget); while free, their memory goes back to the system, so
 * parked flows cost their small buffer, however many were busy in a burst.
 */
const largeBuffers = new BufferPool(ACTIVE_BUFFER, 8_192, relayBuffers, true);
/** Datagrams held while the target is resolved and the socket bound. */
const OPENING_QUEUE = 16;

/** How a UDP flow sends replies back: through its listening socket. */
export type ReplySender = (data: Uint8Array, client: Deno.NetAddr) => Promise<unknown>;

/** What a UDP flow starts from. */
export interface UdpSessionSetup {
  readonly client: Deno.NetAddr;
  readonly rule: PassRule;
  /** The target this flow sends to, for its whole life. */
  readonly target: Target;
  /** The address to send from, or null. */
  readonly source: SourcePlan | null;
  readonly dialer: Dialer;
  /** The rule's bandwidth budgets: datagrams beyond them are dropped. */
  readonly bandwidth: { readonly up: Bandwidth; readonly down: Bandwidth } | null;
  readonly tuning: RelayTuning;
  readonly sendReply: ReplySender;
  /** Called once, when the flow has ended. */
  readonly onEnd: () => void;
}

/** A relayed UDP flow from its first datagram to its idle expiry. */
export class UdpSession implements Closable {
  #lastActivity = coarseNow();
  #socket: Deno.DatagramConn | undefined;
  #target: Deno.NetAddr | undefined;
  #queue: Uint8Array[] | undefined = [];
  #parked = false;
  #closed = false;
  #reason: DisconnectReason | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #handle: SessionHandle | undefined;
  /** While draining: the flow ends once quiet this long. */
  #drainGraceMs: number | undefined;

  constructor(readonly setup: UdpSessionSetup) {}

  /**
   * Opens the upstream socket and relays `first` and anything queued meanwhile.
   * Runs until the flow ends; never throws.
   */
  async run(first: Uint8Array, handle: SessionHandle): Promise<void> {
    this.#handle = handle;
    this.#queue!.push(first.slice());
    try {
      if (await this.#open()) {
        handle.connected({
          target: formatTarget(this.setup.target),
          local: peerText(this.#socket!.addr as Deno.NetAddr),
          remote: peerText(this.#target!),
        });
        this.#armTimer();
        const queued = this.#queue!;
        this.#queue = undefined;
        for (const datagram of queued) await this.#send(datagram);
        await this.#receiveReplies();
      }
    } finally {
      this.close(this.#reason ?? "error");
      this.setup.onEnd();
      handle.ended(this.#reason ?? "error");
    }
  }

  /** Relays a datagram from the client. The caller may reuse `data` once this resolves. */
  async forward(data: Uint8Array): Promise<void> {
    if (this.#closed) return;
    if (this.#queue) {
      if (this.#queue.length < OPENING_QUEUE) this.#queue.push(data.slice());
      else this.#handle!.dropped("queue-full");
      return;
    }
    await this.#send(data);
  }

  close(reason: DisconnectReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reason ??= reason;
    clearTimeout(this.#timer);
    try {
      this.#socket?.close();
    } catch {
      // Already closed.
    }
  }

  drainWhenQuiet(graceMs: number): void {
    if (this.#closed) return;
    this.#drainGraceMs = graceMs;
    if (this.#socket) {
      clearTimeout(this.#timer);
      this.#check();
    }
  }

  async #open(): Promise<boolean> {
    try {
      const upstream = await this.setup.dialer.udp(this.setup.target, this.setup.source);
      if (this.#closed) {
        upstream.socket.close();
        return false;
      }
      this.#socket = upstream.socket;
      this.#target = upstream.target;
      return true;
    } catch (error) {
      if (this.#closed) return false;
      this.#handle!.error(describeIoError(error));
      this.close("error");
      return false;
    }
  }

  async #send(data: Uint8Array): Promise<void> {
    this.#touch();
    if (this.setup.bandwidth && !this.setup.bandwidth.up.tryTake(data.length)) {
      this.#handle!.dropped("bandwidth");
      return;
    }
    try {
      await this.#socket!.send(data, this.#target!);
      this.#handle!.delivered("up", data.length);
    } catch (error) {
      if (this.#closed) return;
      this.#handle!.dropped("send-failed", `send to target failed: ${describeIoError(error)}`);
    }
  }

  async #receiveReplies(): Promise<void> {
    const socket = this.#socket!;
    const own = socket.addr as Deno.NetAddr;
    const small = new Uint8Array(PARKED_BUFFER);
    let large: Uint8Array | null = null;
    try {
      while (!this.#closed) {
        if (this.#parked && large) {
          largeBuffers.give(large);
          large = null;
        } else if (!this.#parked) large ??= largeBuffers.tryTake();
        await this.#receiveOne(socket, own, large ?? small, large === null);
      }
    } finally {
      if (large) largeBuffers.give(large);
    }
  }

  /** Receives and relays one reply (or drops it, saying why). */
  async #receiveOne(
    socket: Deno.DatagramConn,
    own: Deno.NetAddr,
    buffer: Uint8Array,
    small: boolean,
  ): Promise<void> {
    const handle = this.#handle!;
    let data: Uint8Array;
    let from: Deno.NetAddr;
    try {
      const [received, address] = await socket.receive(buffer);
      data = received;
      from = address as Deno.NetAddr;
    } catch (error) {
      if (this.#closed) return;
      handle.error(`receive from target failed: ${describeIoError(error)}`);
      this.close("error");
      return;
    }
    if (from.port === own.port && isOwnAddress(from.hostname, own)) return; // Our own wake-up.
    if (!this.#fromTarget(from)) {
      handle.dropped("not-from-target");
      return;
    }
    const wasParked = this.#parked;
    this.#touch();
    if (small && data.length === buffer.length) {
      const why = wasParked
        ? "the session was parked"
        : "the buffer memory budget (buffer_memory) was spent";
      handle.dropped(
        "truncated",
        `reply of ${buffer.length} bytes or more arrived while ${why} and was dropped`,
      );
      return;
    }
    if (this.setup.bandwidth && !this.setup.bandwidth.down.tryTake(data.length)) {
      handle.dropped("bandwidth");
      return;
    }
    try {
      await this.setup.sendReply(data, this.setup.client);
      handle.delivered("down", data.length);
    } catch (error) {
      if (this.#closed) return;
      handle.dropped("send-failed", `send to client failed: ${describeIoError(error)}`);
    }
  }

  #fromTarget(from: Deno.NetAddr): boolean {
    const target = this.#target!;
    if (from.port !== target.port) return false;
    if (from.hostname === target.hostname) return true; // The usual case, without parsing.
    const address = parseClientAddress(from.hostname)?.toString();
    return address !== undefined && address === parseClientAddress(target.hostname)?.toString();
  }

  /** Records traffic: refreshes the idle clock and unparks. */
  #touch(): void {
    this.#lastActivity = coarseNow();
    if (this.#parked) {
      this.#parked = false;
      this.#wake();
    }
  }

  /** Wakes the pending receive so it is re-issued with the buffer now wanted. */
  #wake(): void {
    const socket = this.#socket;
    if (!socket || this.#closed) return;
    const own = socket.addr as Deno.NetAddr;
    socket.send(new Uint8Array(0), { transport: "udp", hostname: wakeAddress(own), port: own.port })
      .catch(() => {});
  }

  /** Ends the flow when quiet long enough, parks it when quiet a while, and re-arms. */
  #check = (): void => {
    const quiet = performance.now() - this.#lastActivity;
    const grace = this.#drainGraceMs;
    if (grace !== undefined && quiet >= grace) return this.close("drained");
    const idle = this.setup.rule.udpIdleTimeoutMs;
    if (quiet >= idle) return this.close("idle-timeout");
    const parkAfter = this.setup.tuning.udpParkAfterMs;
    if (!this.#parked && quiet >= parkAfter) {
      this.#parked = true;
      this.#wake();
    }
    const next = Math.min(
      idle - quiet,
      this.#parked ? Infinity : parkAfter - quiet,
      grace === undefined ? Infinity : grace - quiet,
      MAX_TIMER_MS, // Longer waits re-check.
    );
    this.#timer = setTimeout(this.#check, Math.max(1, next));
  };

  #armTimer(): void {
    this.#check();
  }
}

/** Where a socket sends itself its wake-up: its own address, or loopback when bound to every address. */
function wakeAddress(own: Deno.NetAddr): string {
  if (own.hostname === "0.0.0.0") return "127.0.0.1";
  if (own.hostname === "::") return "::1";
  return own.hostname;
}

/** Whether a datagram's sender is this socket itself (its wake-up). */
function isOwnAddress(hostname: string, own: Deno.NetAddr): boolean {
  const from = parseClientAddress(hostname);
  return from !== null && from.toString() === parseClientAddress(wakeAddress(own))?.toString();
}
