/**
 * The running bouncer: binds every planned listener (all or none), serves
 * them, and drains sessions on shutdown.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import type { Rule } from "../config/types.ts";
import { RuleLimiter } from "../relay/limits.ts";
import type { RelayContext } from "../relay/context.ts";
import { SessionRegistry } from "../relay/sessions.ts";
import { TcpRelayListener } from "../relay/tcp/listener.ts";
import { UdpRelayListener } from "../relay/udp/listener.ts";
import type { ListenerPlan } from "../rules/plan.ts";
import { Stats } from "../status/stats.ts";

/** A listener that could not be bound, and why. */
export interface BindFailure {
  readonly key: string;
  readonly error: string;
}

/** An address actually bound, as written to the ready file. */
export interface BoundAddress {
  readonly protocol: "tcp" | "udp";
  /** The planned listener (`tcp 127.0.0.1:0`). */
  readonly key: string;
  readonly address: string;
  readonly port: number;
}

/** A set of bound listeners with their sessions. */
export class Server implements RelayContext {
  readonly sessions = new SessionRegistry();
  readonly stats = new Stats();
  readonly #limiters = new WeakMap<Rule, RuleLimiter>();
  readonly #listeners: (TcpRelayListener | UdpRelayListener)[] = [];

  private constructor(readonly log: Logger) {}

  /**
   * Binds every listener of the plan. If any fails, closes those already bound
   * and returns every failure: nothing is left half-open.
   */
  static bind(
    plan: readonly ListenerPlan[],
    log: Logger,
  ): { ok: true; server: Server } | { ok: false; failures: BindFailure[] } {
    const server = new Server(log);
    const failures: BindFailure[] = [];
    for (const listenerPlan of plan) {
      const opened = openListener(listenerPlan, server);
      if ("error" in opened) failures.push({ key: listenerPlan.key, error: opened.error });
      else server.#listeners.push(opened);
    }
    if (failures.length > 0) {
      for (const listener of server.#listeners) listener.close();
      return { ok: false, failures };
    }
    return { ok: true, server };
  }

  /** The limiter of a rule object. */
  limiter(rule: Rule): RuleLimiter {
    let limiter = this.#limiters.get(rule);
    if (!limiter) this.#limiters.set(rule, limiter = new RuleLimiter(rule));
    return limiter;
  }

  /** Starts accepting on every listener. */
  serve(): void {
    for (const listener of this.#listeners) listener.serve();
  }

  /** Addresses actually bound, in plan order. */
  boundAddresses(): BoundAddress[] {
    return this.#listeners.map((listener) => ({
      protocol: listener.plan.protocol,
      key: listener.plan.key,
      address: listener.address.hostname,
      port: listener.address.port,
    }));
  }

  /** One line per listener: `tcp 127.0.0.1:8080 -> 127.0.0.1:80 (web)`. */
  describeListeners(): string[] {
    return this.#listeners.map((listener) => {
      const bound = formatAddress(
        listener.address.hostname,
        listener.address.port,
      );
      const rules = listener.plan.bindings.map((b) =>
        b.target
          ? `${formatAddress(b.target.host, b.target.port)} (${b.rule.name})`
          : `block (${b.rule.name})`
      );
      return `${listener.plan.protocol} ${bound} -> ${rules.join(", ")}`;
    });
  }

  /** Stops accepting new sessions on every listener. */
  stopAccepting(): void {
    for (const listener of this.#listeners) listener.close();
  }

  /**
   * Stops accepting, lets live sessions end by themselves for up to
   * `drainMs`, then closes the rest with reason `shutdown`.
   * Resolves once every session has ended.
   */
  async shutdown(drainMs: number): Promise<void> {
    this.stopAccepting();
    if (this.sessions.size > 0) {
      this.log.info(
        "stopping: waiting up to {drain} for {sessions} live sessions to end",
        {
          drain: formatDuration(drainMs),
          sessions: this.sessions.size,
        },
      );
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = await Promise.race([
        this.sessions.whenEmpty().then(() => true),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), drainMs)),
      ]);
      clearTimeout(timer);
      if (!drained) this.closeAllSessions();
    }
    await this.sessions.whenEmpty();
  }

  /** Ends every live session now, with reason `shutdown`. */
  closeAllSessions(): void {
    this.sessions.closeAll("shutdown");
  }
}

/** Binds one planned listener, or says why it cannot be bound. */
function openListener(
  plan: ListenerPlan,
  context: RelayContext,
): TcpRelayListener | UdpRelayListener | { error: string } {
  const open = (hostname: string) =>
    plan.protocol === "tcp"
      ? new TcpRelayListener(plan, Deno.listen({ hostname, port: plan.port }), context)
      : new UdpRelayListener(
        plan,
        Deno.listenDatagram({ hostname, port: plan.port, transport: "udp" }),
        context,
      );
  try {
    return open(plan.address);
  } catch (error) {
    // `*` on a host without IPv6: every IPv4 address is the best there is.
    if (plan.everyAddress && error instanceof Deno.errors.AddrNotAvailable) {
      try {
        return open("0.0.0.0");
      } catch (fallbackError) {
        return { error: describeBindError(fallbackError, plan.port) };
      }
    }
    return { error: describeBindError(error, plan.port) };
  }
}

/** Names why an address could not be bound, with the usual cure. */
export function describeBindError(error: unknown, port: number): string {
  if (error instanceof Deno.errors.AddrInUse) {
    return "address already in use (another program, or another listener of these rules, holds it)";
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return "address not available: it is not an address of this host";
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return port < 1024
      ? "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE"
      : "permission denied";
  }
  if (error instanceof Deno.errors.NotCapable) {
    return `not permitted: ${error.message}`;
  }
  return error instanceof Error ? error.message.replace(/ \(os error \d+\)$/, "") : String(error);
}
