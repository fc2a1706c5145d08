/**
 * A TCP listener: accepts clients, lets the first matching rule decide, checks
 * the rule's limits, and starts a {@linkcode TcpSession} for each admitted one.
 * The accept loop survives accept errors such as EMFILE (too many open files):
 * it logs once per burst, backs off briefly and keeps serving.
 *
 * @module
 */
import { parseClientAddress } from "../../config/network.ts";
import { formatTarget, type ListenerPlan } from "../../rules/plan.ts";
import { countStart } from "../../status/stats.ts";
import { decide, recordRefusal } from "../admission.ts";
import { peerText } from "../peer.ts";
import type { RelayContext } from "../context.ts";
import { describeIoError } from "./pipe.ts";
import { TcpSession } from "./session.ts";

const MAX_BACKOFF_MS = 1_000;

/** A bound TCP listener serving one {@linkcode ListenerPlan}. */
export class TcpRelayListener {
  #closed = false;
  #serving: Promise<void> | undefined;

  constructor(
    public plan: ListenerPlan,
    readonly listener: Deno.TcpListener,
    readonly context: RelayContext,
  ) {}

  /** The address actually bound (the real port when the plan asked for port 0). */
  get address(): Deno.NetAddr {
    return this.listener.addr;
  }

  /** Starts accepting; resolves when the listener is closed. */
  serve(): Promise<void> {
    this.#serving ??= this.#acceptLoop();
    return this.#serving;
  }

  /** Stops accepting. Live sessions are not touched. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.listener.close();
    } catch {
      // Already closed.
    }
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 0;
    let failures = 0;
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (error) {
        if (this.#closed) return;
        if (failures++ === 0) {
          this.context.log.error(
            "{listener}: accept failed: {error}; backing off and retrying",
            { listener: this.plan.key, error: describeIoError(error) },
          );
        }
        backoff = Math.min(MAX_BACKOFF_MS, backoff === 0 ? 10 : backoff * 2);
        await new Promise((resolve) => setTimeout(resolve, backoff));
        continue;
      }
      if (failures > 0) {
        this.context.log.warn(
          "{listener}: accepting again after {failures} failed accepts",
          { listener: this.plan.key, failures },
        );
        failures = 0;
        backoff = 0;
      }
      this.#handle(conn);
    }
  }

  #handle(conn: Deno.TcpConn): void {
    const remote = conn.remoteAddr;
    const local = conn.localAddr;
    const clientIp = parseClientAddress(remote.hostname);
    const client = peerText(remote, clientIp);
    const listen = peerText(local);

    const decision = decide(this.context, this.plan, clientIp, Date.now());
    if (!decision.pass) {
      recordRefusal(this.context, this.plan.key, decision, { protocol: "tcp", client, listen });
      try {
        conn.close();
      } catch {
        // Already gone.
      }
      return;
    }
    const { rule, target, admission } = decision;
    const counters = this.context.stats.of(rule.name, this.plan.key);
    countStart(counters, client, clientIp!.toString(), Date.now());
    const session = new TcpSession(
      this.plan.key,
      rule,
      { client, listen, target, targetText: formatTarget(target) },
      conn,
      admission,
      counters,
      this.context,
    );
    session.run();
  }
}
