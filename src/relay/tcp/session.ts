/**
 * One TCP session: connect to the target, relay both directions with
 * half-close, end it when it is idle or a write stalls, and report through
 * its {@linkcode SessionHandle} how it went and how it ended.
 *
 * @module
 */
import type { PassRule } from "../../config/types.ts";
import type { Target } from "../../rules/plan.ts";
import { type Dialer, DialTimeout } from "../dial.ts";
import { describeConnectError } from "../errors.ts";
import { peerText } from "../peer.ts";
import type { Closable, DisconnectReason, SessionHandle } from "../session.ts";
import type { Sweepable, Sweeper } from "../sweeper.ts";
import { Direction, pipe, PipeError } from "./pipe.ts";

/** What a TCP session starts from. */
export interface TcpSessionSetup {
  /** The accepted client connection. */
  readonly client: Deno.TcpConn;
  /** The rule that admitted it: timeouts come from here. */
  readonly rule: PassRule;
  /** Where to connect, in order of preference. */
  readonly targets: readonly Target[];
  readonly dialer: Dialer;
  /** Checks the session's idle and stall deadlines. */
  readonly sweeper: Sweeper;
  /** Whether a connection to this address reached one of portbounce's own listeners. */
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
  #targetConn: Deno.TcpConn | undefined;
  /** Aborts the connect in progress; dropped once connected (idle sessions stay small). */
  #connecting: AbortController | undefined;
  #handle: SessionHandle | undefined;
  #up: Direction | undefined;
  #down: Direction | undefined;

  constructor(readonly setup: TcpSessionSetup) {}

  /** Ends the session now; the first reason given is the one reported. */
  close(reason: DisconnectReason): void {
    this.#reason ??= reason;
    this.#connecting?.abort();
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
      idleTimeoutMs > 0 && now - Math.max(up.lastActivity, down.lastActivity) >= idleTimeoutMs
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

  async #connect(handle: SessionHandle): Promise<Deno.TcpConn | undefined> {
    const { rule, targets, dialer } = this.setup;
    const connecting = this.#connecting = new AbortController();
    try {
      const conn = await dialer.tcp(targets[0], rule.connectTimeoutMs, connecting);
      if (this.#reason) {
        // Closed (drain, shutdown) while connecting.
        closeQuietly(conn);
        return undefined;
      }
      if (this.setup.isOwnListener(conn.remoteAddr, conn.localAddr)) {
        closeQuietly(conn);
        this.#reason = "error";
        this.#error = `${
          peerText(conn.remoteAddr)
        } is one of portbounce's own listeners: the session would loop`;
        handle.error(this.#error);
        return undefined;
      }
      this.#targetConn = conn;
      return conn;
    } catch (error) {
      if (this.#reason) return undefined;
      const cause = error instanceof DialTimeout ? error.message : describeConnectError(error);
      this.#reason = "error";
      this.#error = cause;
      handle.error(cause);
      return undefined;
    } finally {
      this.#connecting = undefined;
    }
  }

  async #relay(target: Deno.TcpConn, handle: SessionHandle): Promise<void> {
    const client = this.setup.client;
    for (const conn of [client, target]) {
      try {
        conn.setNoDelay(true);
        conn.setKeepAlive(true);
      } catch {
        // The peer may already be gone; the relay below reports that.
      }
    }
    handle.connected(peerText(target.localAddr), peerText(target.remoteAddr));
    const up = this.#up = new Direction(
      (n) => handle.delivered("up", n),
      (error) => this.#pipeFailed(error, "client"),
    );
    const down = this.#down = new Direction(
      (n) => handle.delivered("down", n),
      (error) => this.#pipeFailed(error, "target"),
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

  #probe(conn: Deno.TcpConn, side: "client" | "target"): void {
    conn.write(EMPTY).catch((error) => this.#pipeFailed(new PipeError("source", error), side));
  }

  /** A direction reading from `reading` failed (on either of its sockets). */
  #pipeFailed(error: unknown, reading: "client" | "target"): void {
    const writing = reading === "client" ? "target" : "client";
    const side = error instanceof PipeError && error.side === "destination" ? writing : reading;
    const reset = error instanceof PipeError && error.isReset;
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

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
