/**
 * A UDP listener: one socket receiving from every client. A datagram from a
 * known client (address, port) goes to its session; one from a new client is
 * decided like a TCP connection (first matching rule, then limits) and starts
 * a {@linkcode UdpSession}. Refused datagrams are dropped; their `block` event
 * is logged at most once per client per minute, so a flood cannot flood the log.
 *
 * @module
 */
import { parseClientAddress } from "../../config/network.ts";
import type { ListenerPlan } from "../../rules/plan.ts";
import { formatTarget } from "../../rules/plan.ts";
import { countStart } from "../../status/stats.ts";
import { decide, recordRefusal } from "../admission.ts";
import type { RelayContext } from "../context.ts";
import { OncePer } from "../once_per.ts";
import { describeIoError } from "../tcp/pipe.ts";
import { peerText } from "../peer.ts";
import { ACTIVE_BUFFER, UdpSession } from "./session.ts";

const BLOCK_LOG_INTERVAL_MS = 60_000;
const MAX_BACKOFF_MS = 1_000;

/** A bound UDP listener serving one {@linkcode ListenerPlan}. */
export class UdpRelayListener {
  readonly #sessions = new Map<string, UdpSession>();
  readonly #blockLog = new OncePer(BLOCK_LOG_INTERVAL_MS);
  #draining = false;
  #closed = false;
  #serving: Promise<void> | undefined;

  constructor(
    public plan: ListenerPlan,
    readonly socket: Deno.DatagramConn,
    readonly context: RelayContext,
  ) {}

  /** The address actually bound. */
  get address(): Deno.NetAddr {
    return this.socket.addr as Deno.NetAddr;
  }

  /** Starts receiving; resolves when the socket is closed. */
  serve(): Promise<void> {
    this.#serving ??= this.#receiveLoop();
    return this.#serving;
  }

  /**
   * Takes no new sessions. The socket stays open while sessions live (their
   * replies leave through it) and closes when the last one ends.
   */
  close(): void {
    if (this.#draining) return;
    this.#draining = true;
    if (this.#sessions.size === 0) this.#closeSocket();
  }

  /**
   * Takes new sessions again under `plan` (a reload re-adds a listener whose
   * sessions are still draining). False if the socket has already closed.
   */
  revive(plan: ListenerPlan): boolean {
    if (this.#closed) return false;
    this.plan = plan;
    this.#draining = false;
    return true;
  }

  #closeSocket(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.socket.close();
    } catch {
      // Already closed.
    }
  }

  async #receiveLoop(): Promise<void> {
    // 65,536 bytes: larger than any UDP payload, so a client datagram is never cut.
    const buffer = new Uint8Array(ACTIVE_BUFFER);
    const listen = peerText(this.address);
    let backoff = 0;
    let failures = 0;
    const reply = (data: Uint8Array, client: Deno.NetAddr) => this.socket.send(data, client);
    while (!this.#closed) {
      let data: Uint8Array;
      let from: Deno.NetAddr;
      try {
        const [received, address] = await this.socket.receive(buffer);
        data = received;
        from = address as Deno.NetAddr;
      } catch (error) {
        if (this.#closed) return;
        if (failures++ === 0) {
          this.context.log.error("{listener}: receive failed: {error}; backing off and retrying", {
            listener: this.plan.key,
            error: describeIoError(error),
          });
        }
        backoff = Math.min(MAX_BACKOFF_MS, backoff === 0 ? 10 : backoff * 2);
        await new Promise((resolve) => setTimeout(resolve, backoff));
        continue;
      }
      failures = 0;
      backoff = 0;
      const key = `${from.hostname} ${from.port}`;
      const session = this.#sessions.get(key);
      if (session) {
        await session.forward(data);
        continue;
      }
      this.#start(key, data, from, listen, reply);
    }
  }

  #start(
    key: string,
    data: Uint8Array,
    from: Deno.NetAddr,
    listen: string,
    reply: (data: Uint8Array, client: Deno.NetAddr) => Promise<number>,
  ): void {
    const clientIp = parseClientAddress(from.hostname);
    const client = peerText(from, clientIp);
    const now = Date.now();
    const decision = this.#draining
      ? { pass: false as const, rule: null, reason: "draining" as const }
      : decide(this.context, this.plan, clientIp, now);
    if (!decision.pass) {
      const log = this.#blockLog.pass(
        `${decision.rule?.name ?? "-"} ${clientIp ?? from.hostname}`,
        now,
      );
      recordRefusal(
        this.context,
        this.plan.key,
        decision,
        { protocol: "udp", client, listen },
        log,
      );
      return;
    }
    const { rule, target, admission } = decision;
    const counters = this.context.stats.of(rule.name, this.plan.key);
    countStart(counters, client, clientIp!.toString(), now);
    const session = new UdpSession(
      this.plan.key,
      rule,
      target,
      from,
      { client, listen, target: formatTarget(target) },
      reply,
      admission,
      counters,
      this.context,
      () => {
        this.#sessions.delete(key);
        if (this.#draining && this.#sessions.size === 0) this.#closeSocket();
      },
    );
    this.#sessions.set(key, session);
    session.run(data);
  }
}
