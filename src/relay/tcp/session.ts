/**
 * One TCP session: connect to a target (the next one when a connect fails,
 * within the rule's connect budget), send a PROXY header if the rule asks,
 * relay both directions with half-close under the rule's bandwidth, end it
 * when it is idle or a write stalls, and report through its
 * {@linkcode SessionHandle} how it went and how it ended.
 *
 * @module
 */
import type { PassRule } from "../../config/types.ts";
import { formatTarget, type SourcePlan, type Target } from "../../rules/plan.ts";
import { type Dialer, DialTimeout } from "../dial.ts";
import { describeConnectError } from "../errors.ts";
import type { TargetPool } from "../host.ts";
import { peerText } from "../peer.ts";
import { proxyHeader } from "../proxy_protocol.ts";
import type { Closable, DisconnectReason, SessionHandle } from "../session.ts";
import type { Sweepable, Sweeper } from "../sweeper.ts";
import type { RelayConn } from "./conn.ts";
import { Direction, pipe, PipeError } from "./pipe.ts";

/** What a TCP session starts from. */
export interface TcpSessionSetup {
  /** The accepted client connection. */
  readonly client: Deno.TcpConn;
  /** The rule that admitted it: timeouts come from here. */
  readonly rule: PassRule;
  /** Where to connect, as listed; the pool says in which order. */
  readonly targets: readonly Target[];
  /** The address to connect from, or null. */
  readonly source: SourcePlan | null;
  /** The client's address alone, for `source-hash`. */
  readonly clientIp: string;
  readonly dialer: Dialer;
  readonly pool: TargetPool;
  /** Checks the session's idle and stall deadlines. */
  readonly sweeper: Sweeper;
  /** Whether a connection (from `local`) to `remote` reached one of portbounce's own listeners. */
  readonly isOwnListener: (remote: Deno.NetAddr, local: Deno.NetAddr) => boolean;
}

/** How long a write may wait before the blocked direction's source is probed for a reset. */
const PROBE_AFTER_MS = 1_000;
const EMPTY = new Uint8Array(0);

/** A relayed TCP connection from accept to close. */
export class TcpSession implements Closable, Sweepable {
  #reason: DisconnectReason | undefined;
  #error: string | undefined;
  #firstEnd: "client" | "target" | undefined;
  #targetConn: RelayConn | undefined;
  /** Aborts the connect in progress; dropped once connected (idle sessions stay small). */
  #connecting: AbortController | undefined;
  /** Aborts waits for the rule's bandwidth; only under a bandwidth limit. */
  #throttle: AbortController | undefined;
  #handle: SessionHandle | undefined;
  #up: Direction | undefined;
  #down: Direction | undefined;

  constructor(readonly setup: TcpSessionSetup) {}

  /** Ends the session now; the first reason given is the one reported. */
  close(reason: DisconnectReason): void {
    this.#reason ??= reason;
    this.#connecting?.abort();
    this.#throttle?.abort();
    closeQuietly(this.setup.client);
    if (this.#targetConn) closeQuietly(this.#targetConn);
  }

  /**
   * Ends the session if it has been idle, or a write has stalled, too long;
   * probes the source of a blocked direction for a reset.
   */
  sweep(now: number): void {
    const up = this.#up, down = this.#down;
    if (!up || !down) return;
    const { idleTimeoutMs, stallTimeoutMs } = this.setup.rule;
    const writingSince = Math.min(up.writingSince || Infinity, down.writingSince || Infinity);
    if (writingSince !== Infinity) {
      if (stallTimeoutMs > 0 && now - writingSince >= stallTimeoutMs) {
        const side = writingSince === up.writingSince ? "target" : "client";
        this.#fail("stalled", `${side}: not reading; no write progress for the stall timeout`);
        return;
      }
      // A blocked direction no longer reads its source, so a reset there would go
      // unseen (queued data hides it from reads): an empty write reports it.
      if (up.writingSince && now - up.writingSince >= PROBE_AFTER_MS) {
        this.#probe(this.setup.client, "client");
      }
      if (down.writingSince && now - down.writingSince >= PROBE_AFTER_MS && this.#targetConn) {
        this.#probe(this.#targetConn, "target");
      }
    } else if (
      idleTimeoutMs > 0 && !up.busy && !down.busy &&
      now - Math.max(up.lastActivity, down.lastActivity) >= idleTimeoutMs
    ) {
      this.close("idle-timeout");
    }
  }

  /** Runs the session to its end, reporting to `handle`. Never throws. */
  async run(handle: SessionHandle): Promise<void> {
    this.#handle = handle;
    try {
      const target = await this.#connect(handle);
      if (target) await this.#relay(target, handle);
    } finally {
      this.setup.sweeper.delete(this);
      closeQuietly(this.setup.client);
      if (this.#targetConn) closeQuietly(this.#targetConn);
      const reason = this.#reason ??
        (this.#firstEnd === "target" ? "target-closed" : "client-closed");
      handle.ended(reason, this.#error);
    }
  }

  /** Tries the targets in the pool's order until one answers, within `connect_timeout` in all. */
  async #connect(handle: SessionHandle): Promise<RelayConn | undefined> {
    const { rule, targets, dialer, pool, source } = this.setup;
    const order = pool.order(rule, targets, this.setup.clientIp);
    const started = performance.now();
    const failures: string[] = [];
    for (let i = 0; i < order.length; i++) {
      const left = rule.connectTimeoutMs - (performance.now() - started);
      if (left <= 0) break;
      const target = order[i];
      const connecting = this.#connecting = new AbortController();
      try {
        // Each target left gets its share of what remains of the budget.
        const conn = await dialer.tcp(target, left / (order.length - i), connecting, source);
        this.#connecting = undefined;
        if (this.#reason) {
          // Closed (drain, shutdown) while connecting.
          closeQuietly(conn);
          return undefined;
        }
        if (this.setup.isOwnListener(conn.remoteAddr, conn.localAddr)) {
          closeQuietly(conn);
          this.#setError(
            `${
              peerText(conn.remoteAddr)
            } is one of portbounce's own listeners: the session would loop`,
          );
          return undefined;
        }
        pool.succeeded(target);
        this.#targetConn = conn;
        handle.connected({
          target: formatTarget(target),
          local: peerText(conn.localAddr),
          remote: peerText(conn.remoteAddr),
        });
        return conn;
      } catch (error) {
        this.#connecting = undefined;
        if (this.#reason) return undefined;
        const cause = error instanceof DialTimeout ? error.message : describeConnectError(error);
        pool.failed(target, cause);
        failures.push(`${formatTarget(target)}: ${cause}`);
        if (order.length > 1 && i < order.length - 1) {
          handle.attemptFailed(formatTarget(target), cause);
        }
      }
    }
    this.#setError(
      order.length === 1
        ? failures[0]?.replace(/^[^ ]+: /, "") ?? "no connect budget left"
        : `all ${order.length} targets failed: ${failures.join("; ")}`,
    );
    return undefined;
  }

  #setError(cause: string): void {
    this.#reason = "error";
    this.#error = cause;
    this.#handle!.error(cause);
  }

  async #relay(target: RelayConn, handle: SessionHandle): Promise<void> {
    const { client, rule, pool } = this.setup;
    for (const conn of [client, target]) {
      try {
        conn.setNoDelay(true);
        conn.setKeepAlive(true);
      } catch {
        // The peer may already be gone; the relay below reports that.
      }
    }
    if (rule.proxyProtocol) {
      const header = proxyHeader(rule.proxyProtocol, {
        clientAddress: client.remoteAddr.hostname,
        clientPort: client.remoteAddr.port,
        listenAddress: client.localAddr.hostname,
        listenPort: client.localAddr.port,
      });
      try {
        for (let written = 0; written < header.length;) {
          written += await target.write(header.subarray(written));
        }
      } catch (error) {
        return this.#pipeFailed(new PipeError("destination", error), "client");
      }
    }
    const bandwidth = pool.bandwidth(rule);
    const closing = bandwidth ? (this.#throttle = new AbortController()).signal : undefined;
    const up = this.#up = new Direction(
      (n) => handle.delivered("up", n),
      (error) => this.#pipeFailed(error, "client"),
      bandwidth?.up ?? null,
      closing,
    );
    const down = this.#down = new Direction(
      (n) => handle.delivered("down", n),
      (error) => this.#pipeFailed(error, "target"),
      bandwidth?.down ?? null,
      closing,
    );
    this.setup.sweeper.add(this);
    await Promise.all([
      pipe(client, target, up, down).then(
        () => this.#firstEnd ??= "client",
        (error) => this.#pipeFailed(error, "client"),
      ),
      pipe(target, client, down, up).then(
        () => this.#firstEnd ??= "target",
        (error) => this.#pipeFailed(error, "target"),
      ),
    ]);
  }

  #probe(conn: RelayConn, side: "client" | "target"): void {
    conn.write(EMPTY).catch((error) => this.#pipeFailed(new PipeError("source", error), side));
  }

  /** A direction reading from `reading` failed (on either of its sockets). */
  #pipeFailed(error: unknown, reading: "client" | "target"): void {
    const writing = reading === "client" ? "target" : "client";
    const side = error instanceof PipeError && error.side === "destination" ? writing : reading;
    const reset = error instanceof PipeError && error.isReset;
    if (reset && !this.#reason) {
      // Pass the reset on where the runtime can (a node:net connection toward the target).
      const other = side === "client" ? this.#targetConn : undefined;
      other?.reset?.();
    }
    if (side === "client" && (reset || (error instanceof PipeError && error.isAborted))) {
      // The client left (a cancelled download, a closed tab): nothing for the operator to do.
      if (!this.#reason) this.close("client-reset");
      return;
    }
    this.#fail(
      reset ? "reset" : "error",
      `${side}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }

  #fail(reason: DisconnectReason, message: string): void {
    if (this.#reason) return; // We closed the sockets ourselves; that is not an I/O error.
    this.#reason = reason;
    this.#error = message;
    this.#handle!.error(message);
    this.close(reason);
  }
}

function closeQuietly(conn: RelayConn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
