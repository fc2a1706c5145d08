/**
 * A TCP listener: accepts clients, lets the first matching rule decide, checks
 * the rule's limits, and starts a {@linkcode TcpSession} for each admitted one.
 * The accept loop survives accept errors such as EMFILE (too many open files):
 * it logs once per burst, backs off briefly and keeps serving.
 *
 * @module
 */
import { formatAddress } from "../../config/endpoint.ts";
import { parseClientAddress } from "../../config/network.ts";
import type { Rule } from "../../config/types.ts";
import type { BlockReason } from "../../log/events.ts";
import { firstMatch } from "../../rules/match.ts";
import { formatTarget, type ListenerPlan } from "../../rules/plan.ts";
import { countBlock, countStart } from "../../status/stats.ts";
import { logEvent, type RelayContext } from "../context.ts";
import { describeIoError } from "./pipe.ts";
import { TcpSession } from "./session.ts";

const MAX_BACKOFF_MS = 1_000;

/** A bound TCP listener serving one {@linkcode ListenerPlan}. */
export class TcpRelayListener {
  #closed = false;
  #serving: Promise<void> | undefined;

  constructor(
    readonly plan: ListenerPlan,
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
    const localIp = parseClientAddress(local.hostname);
    const client = formatAddress(
      clientIp?.toString() ?? remote.hostname,
      remote.port,
    );
    const listen = formatAddress(
      localIp?.toString() ?? local.hostname,
      local.port,
    );
    const binding = clientIp ? firstMatch(this.plan.bindings, clientIp) : undefined;

    const refuse = (rule: Rule | null, reason: BlockReason) => {
      countBlock(
        this.context.stats.of(rule?.name ?? null, this.plan.key),
        reason,
      );
      logEvent(this.context.log, {
        event: "block",
        action: "block",
        rule: rule?.name ?? null,
        protocol: "tcp",
        client,
        listen,
        reason,
      }, rule);
      try {
        conn.close();
      } catch {
        // Already gone.
      }
    };

    if (!binding) return refuse(null, "no-matching-rule");
    const { rule, target } = binding;
    if (rule.action === "block" || target === null) return refuse(rule, "rule");
    const admission = this.context.limiter(rule).admit(
      clientIp!.toString(),
      Date.now(),
    );
    if ("refused" in admission) return refuse(rule, admission.refused);

    const counters = this.context.stats.of(rule.name, this.plan.key);
    countStart(counters, client, Date.now());
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
