/**
 * A UDP listener: one socket receiving from every client. A datagram from a
 * known client (address, port) goes to its flow; one from a new client is
 * decided like a TCP connection (first matching rule, then limits) and starts
 * a {@linkcode UdpSession}. Refused datagrams are dropped; the daemon logs
 * their `block` events rate-limited, so a flood cannot flood the log.
 *
 * @module
 */
import { parseClientAddress } from "../../config/network.ts";
import { formatTarget, type ListenerPlan } from "../../rules/plan.ts";
import type { RelayListener, SyncRelayHost } from "../host.ts";
import { peerText } from "../peer.ts";
import { serveLoop } from "../serve_loop.ts";
import { FlowTable } from "./flows.ts";
import { ACTIVE_BUFFER, UdpSession } from "./session.ts";

/** A bound UDP listener serving one {@linkcode ListenerPlan}. */
export class UdpRelayListener implements RelayListener {
  readonly protocol = "udp";
  readonly #flows = new FlowTable<UdpSession>();
  readonly #closed = Promise.withResolvers<void>();
  #draining = false;
  #socketClosed = false;

  constructor(
    public plan: ListenerPlan,
    readonly socket: Deno.DatagramConn,
    readonly host: SyncRelayHost,
  ) {}

  get address(): Deno.NetAddr {
    return this.socket.addr as Deno.NetAddr;
  }

  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  serve(): void {
    // 65,536 bytes: larger than any UDP payload, so a client datagram is never cut.
    const buffer = new Uint8Array(ACTIVE_BUFFER);
    const listen = peerText(this.address);
    const key = () => this.plan.key;
    serveLoop(
      () => this.socket.receive(buffer),
      ([data, from]) => this.#handle(data, from as Deno.NetAddr, listen),
      {
        closed: () => this.#socketClosed,
        failing: (error) => this.host.listenerFailing(key(), "receive", error),
        recovered: (failures) => this.host.listenerRecovered(key(), "receive", failures),
      },
    );
  }

  replacePlan(plan: ListenerPlan): void {
    this.plan = plan;
  }

  /**
   * Takes no new flows. The socket stays open while flows live (their replies
   * leave through it) and closes when the last one ends.
   */
  stopAccepting(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.#flows.onEmpty(() => this.closeSocket());
  }

  /**
   * Takes new flows again under `plan` (a reload re-added a listener whose
   * flows are still draining). False if the socket has already closed.
   */
  revive(plan: ListenerPlan): boolean {
    if (this.#socketClosed) return false;
    this.plan = plan;
    this.#draining = false;
    this.#flows.cancelOnEmpty();
    return true;
  }

  /** Closes the socket now, flows or not (a reload needs its port for a new listener). */
  closeSocket(): void {
    if (this.#socketClosed) return;
    this.#socketClosed = true;
    try {
      this.socket.close();
    } catch {
      // Already closed.
    }
    this.#closed.resolve();
  }

  #handle(data: Uint8Array, from: Deno.NetAddr, listen: string): Promise<void> | void {
    const key = FlowTable.keyOf(from);
    const flow = this.#flows.get(key);
    if (flow) return flow.forward(data);
    this.#start(key, data, from, listen);
  }

  #start(key: string, data: Uint8Array, from: Deno.NetAddr, listen: string): void {
    const clientIp = parseClientAddress(from.hostname);
    const client = peerText(from, clientIp);
    const decision = this.#draining
      ? { pass: false as const, rule: null, reason: "draining" as const }
      : this.host.decide(this.plan, clientIp);
    if (!decision.pass) {
      this.host.refuse(this.plan.key, decision, {
        protocol: "udp",
        client,
        clientIp: clientIp?.toString() ?? from.hostname,
        listen,
      });
      return;
    }
    const { rule, targets, source, admission } = decision;
    // No connect to fail over with: the flow takes the first target the pool offers.
    const [target] = this.host.targets.order(rule, targets, clientIp!.toString());
    const session = new UdpSession({
      client: from,
      rule,
      target,
      source,
      dialer: this.host.dialer,
      tuning: this.host.tuning,
      bandwidth: this.host.targets.bandwidth(rule),
      sendReply: (reply, to) => this.socket.send(reply, to),
      onEnd: () => this.#flows.delete(key),
    });
    this.#flows.add(key, session);
    const handle = this.host.open({
      setup: {
        protocol: "udp",
        listenerKey: this.plan.key,
        client,
        clientIp: clientIp!.toString(),
        listen,
        target: formatTarget(target),
      },
      rule,
      admission,
    }, session);
    session.run(data, handle);
  }
}
