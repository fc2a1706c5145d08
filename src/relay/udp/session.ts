/**
 * One UDP session: a client (address, port) on one listener, with its own
 * upstream socket (an ephemeral port) toward the target. Replies arriving on
 * that socket from the target, and only from the target (Barefoot's
 * `udp.connectdst: yes`), go back to the client from the listening socket.
 *
 * Memory: a pending `receive()` holds its buffer, about 60 KiB for a 64 KiB
 * buffer, which would make 10,000 idle sessions cost 600 MiB (and freed
 * 64 KiB buffers are not given back to the system). So:
 * - 64 KiB receive buffers come from one pool of {@linkcode LARGE_BUFFERS}
 *   (32 MiB), reused, never freed;
 * - a session quiet for {@linkcode PARK_AFTER_MS} is *parked*: its receive is
 *   woken by an empty datagram the socket sends to itself and re-issued with
 *   its own 4 KiB buffer, and the large one goes back to the pool. Any traffic
 *   unparks it.
 * A reply that fills a 4 KiB buffer (the session was parked, or every large
 * buffer was in use) cannot be held whole: it is counted as `truncated` and
 * logged as an error, never relayed cut short. Otherwise replies of up to
 * 65,535 bytes are relayed whole.
 *
 * @module
 */
import { parseClientAddress } from "../../config/network.ts";
import type { PassRule } from "../../config/types.ts";
import type { DisconnectReason, SessionEvent } from "../../log/events.ts";
import type { Target } from "../../rules/plan.ts";
import { countBytes, countDrop, type Counters, type DropReason } from "../../status/stats.ts";
import { logEvent, type RelayContext } from "../context.ts";
import type { Admission } from "../limits.ts";
import type { LiveSession } from "../sessions.ts";
import { BufferPool } from "../buffer_pool.ts";
import { describeIoError } from "../tcp/pipe.ts";

/** Receive buffer while the session moves traffic: any datagram fits. */
export const ACTIVE_BUFFER = 65_536;
/** Receive buffer while parked. */
export const PARKED_BUFFER = 4_096;
/** Sessions that may wait with a 64 KiB buffer at once (32 MiB in all). */
export const LARGE_BUFFERS = 512;
const largeBuffers = new BufferPool(ACTIVE_BUFFER, LARGE_BUFFERS, LARGE_BUFFERS);
/** Quiet time after which a session parks. */
export const PARK_AFTER_MS = 10_000;
/** Datagrams held while the target is resolved and the socket bound. */
const OPENING_QUEUE = 16;

/** How a UDP session sends replies back: through its listening socket. */
export type ReplySender = (data: Uint8Array, client: Deno.NetAddr) => Promise<unknown>;

/** A relayed UDP flow from its first datagram to its idle expiry. */
export class UdpSession implements LiveSession {
  readonly #started = Date.now();
  #lastActivity = performance.now();
  #bytesUp = 0;
  #bytesDown = 0;
  #datagramsUp = 0;
  #datagramsDown = 0;
  #socket: Deno.DatagramConn | undefined;
  #target: Deno.NetAddr | undefined;
  #queue: Uint8Array[] | undefined = [];
  #parked = false;
  #closed = false;
  #reason: DisconnectReason | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #done = Promise.withResolvers<void>();

  constructor(
    readonly listenerKey: string,
    readonly rule: PassRule,
    readonly target: Target,
    readonly client: Deno.NetAddr,
    readonly names: { readonly client: string; readonly listen: string; readonly target: string },
    readonly sendReply: ReplySender,
    readonly admission: Admission,
    readonly counters: Counters[],
    readonly context: RelayContext,
    readonly onEnd: () => void,
  ) {}

  /** Resolves when the session has ended and logged its disconnect. */
  get done(): Promise<void> {
    return this.#done.promise;
  }

  /**
   * Opens the upstream socket and relays `first` and anything queued meanwhile.
   * Runs until the session ends; never throws.
   */
  async run(first: Uint8Array): Promise<void> {
    this.context.sessions.add(this);
    this.#queue!.push(first.slice());
    try {
      const opened = await this.#open();
      if (opened) {
        this.#event({ event: "connect" });
        this.#armTimer();
        const queued = this.#queue!;
        this.#queue = undefined;
        for (const datagram of queued) await this.#send(datagram);
        await this.#receiveReplies();
      }
    } finally {
      this.#finish();
    }
  }

  /** Relays a datagram from the client. The caller may reuse `data` once this resolves. */
  async forward(data: Uint8Array): Promise<void> {
    if (this.#closed) return;
    if (this.#queue) {
      if (this.#queue.length < OPENING_QUEUE) this.#queue.push(data.slice());
      else this.#drop("queue-full");
      return;
    }
    await this.#send(data);
  }

  /** Ends the session now; the first reason given is the one reported. */
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

  async #open(): Promise<boolean> {
    try {
      const address = await resolveTarget(this.target.host);
      const family = address.includes(":") ? 6 : 4;
      this.#target = { transport: "udp", hostname: address, port: this.target.port };
      if (this.#closed) return false;
      this.#socket = Deno.listenDatagram({
        transport: "udp",
        hostname: family === 6 ? "::" : "0.0.0.0",
        port: 0,
      });
      return true;
    } catch (error) {
      if (this.#closed) return false;
      this.#error(describeIoError(error));
      this.close("error");
      return false;
    }
  }

  async #send(data: Uint8Array): Promise<void> {
    this.#touch();
    try {
      await this.#socket!.send(data, this.#target!);
      this.#datagramsUp++;
      this.#bytesUp += data.length;
      countBytes(this.counters, data.length, 0);
      if (this.rule.log.has("data")) {
        this.#event({ event: "data", bytes: data.length, direction: "up" });
      }
    } catch (error) {
      if (this.#closed) return;
      this.#drop("send-failed", `send to target failed: ${describeIoError(error)}`);
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
        const buffer = large ?? small;
        await this.#receiveOne(socket, own, buffer, large === null);
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
    let data: Uint8Array;
    let from: Deno.NetAddr;
    try {
      const [received, address] = await socket.receive(buffer);
      data = received;
      from = address as Deno.NetAddr;
    } catch (error) {
      if (this.#closed) return;
      this.#error(`receive from target failed: ${describeIoError(error)}`);
      this.close("error");
      return;
    }
    if (from.port === own.port && isLoopback(from.hostname)) return; // Our own wake-up.
    if (!this.#fromTarget(from)) {
      this.#drop("not-from-target");
      return;
    }
    const wasParked = this.#parked;
    this.#touch();
    if (small && data.length === buffer.length) {
      const why = wasParked
        ? "the session was parked"
        : `all ${LARGE_BUFFERS} large receive buffers were in use`;
      this.#drop(
        "truncated",
        `reply of ${buffer.length} bytes or more arrived while ${why} and was dropped`,
      );
      return;
    }
    try {
      await this.sendReply(data, this.client);
      this.#datagramsDown++;
      this.#bytesDown += data.length;
      countBytes(this.counters, 0, data.length);
      if (this.rule.log.has("data")) {
        this.#event({ event: "data", bytes: data.length, direction: "down" });
      }
    } catch (error) {
      if (this.#closed) return;
      this.#drop("send-failed", `send to client failed: ${describeIoError(error)}`);
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
    this.#lastActivity = performance.now();
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
    const loopback = own.hostname.includes(":") ? "::1" : "127.0.0.1";
    socket.send(new Uint8Array(0), { transport: "udp", hostname: loopback, port: own.port })
      .catch(() => {});
  }

  #armTimer(): void {
    const idle = this.rule.udpIdleTimeoutMs;
    const check = () => {
      const quiet = performance.now() - this.#lastActivity;
      if (quiet >= idle) return this.close("idle-timeout");
      if (!this.#parked && quiet >= PARK_AFTER_MS) {
        this.#parked = true;
        this.#wake();
      }
      const untilPark = this.#parked ? Infinity : PARK_AFTER_MS - quiet;
      this.#timer = setTimeout(check, Math.max(1, Math.min(idle - quiet, untilPark)));
    };
    this.#timer = setTimeout(check, Math.min(idle, PARK_AFTER_MS));
  }

  #drop(reason: DropReason, error?: string): void {
    countDrop(this.counters, reason);
    if (error !== undefined) this.#error(error);
  }

  #error(message: string): void {
    for (const c of this.counters) c.errors++;
    this.#event({ event: "error", error: message });
  }

  #event(fields: Pick<SessionEvent, "event"> & Partial<SessionEvent>): void {
    logEvent(this.context.log, {
      action: "pass",
      rule: this.rule.name,
      protocol: "udp",
      client: this.names.client,
      listen: this.names.listen,
      target: this.names.target,
      ...fields,
    }, this.rule);
  }

  #finish(): void {
    this.close(this.#reason ?? "error");
    const connected = this.#socket !== undefined;
    if (connected) {
      this.#event({
        event: "disconnect",
        bytes_up: this.#bytesUp,
        bytes_down: this.#bytesDown,
        datagrams_up: this.#datagramsUp,
        datagrams_down: this.#datagramsDown,
        duration_ms: Date.now() - this.#started,
        reason: this.#reason ?? "error",
      });
    }
    this.admission.release();
    for (const c of this.counters) c.active--;
    this.context.sessions.delete(this);
    this.onEnd();
    this.#done.resolve();
  }
}

/** The target's address: as written, or the first the resolver gives for a name. */
async function resolveTarget(host: string): Promise<string> {
  if (parseClientAddress(host)) return host;
  const { address } = await (await import("node:dns/promises")).lookup(host);
  return address;
}

function isLoopback(hostname: string): boolean {
  const address = parseClientAddress(hostname);
  return address !== null && address.range() === "loopback";
}
