/**
 * One TCP session: connect to the target, relay both directions with
 * half-close, enforce the idle timeout, and report through its
 * {@linkcode SessionHandle} how it went and how it ended.
 *
 * @module
 */
import type { PassRule } from "../../config/types.ts";
import type { Target } from "../../rules/plan.ts";
import { type Dialer, DialTimeout } from "../dial.ts";
import { describeConnectError } from "../errors.ts";
import { peerText } from "../peer.ts";
import type { Closable, DisconnectReason, SessionHandle } from "../session.ts";
import { pipe, PipeError } from "./pipe.ts";

/** What a TCP session starts from. */
export interface TcpSessionSetup {
  /** The accepted client connection. */
  readonly client: Deno.TcpConn;
  /** The rule that admitted it: timeouts come from here. */
  readonly rule: PassRule;
  /** Where to connect, in order of preference. */
  readonly targets: readonly Target[];
  readonly dialer: Dialer;
}

/** A relayed TCP connection from accept to close. */
export class TcpSession implements Closable {
  #lastActivity = performance.now();
  #reason: DisconnectReason | undefined;
  #error: string | undefined;
  #firstEnd: "client" | "target" | undefined;
  /** Whether each side's sending has ended (its EOF was relayed). */
  #clientEnded = false;
  #targetEnded = false;
  #targetConn: Deno.TcpConn | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** Aborts the connect in progress; dropped once connected (idle sessions stay small). */
  #connecting: AbortController | undefined;

  constructor(readonly setup: TcpSessionSetup) {}

  /** Ends the session now; the first reason given is the one reported. */
  close(reason: DisconnectReason): void {
    this.#reason ??= reason;
    this.#connecting?.abort();
    closeQuietly(this.setup.client);
    if (this.#targetConn) closeQuietly(this.#targetConn);
  }

  /** Runs the session to its end, reporting to `handle`. Never throws. */
  async run(handle: SessionHandle): Promise<void> {
    try {
      const target = await this.#connect(handle);
      if (target) await this.#relay(target, handle);
    } finally {
      clearTimeout(this.#idleTimer);
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
    handle.connected(peerText(target.localAddr));
    this.#armIdleTimer();

    const tracksIdle = this.setup.rule.idleTimeoutMs > 0;
    const up = pipe(client, target, (n) => {
      if (tracksIdle) this.#lastActivity = performance.now();
      handle.delivered("up", n);
    }, () => this.#targetEnded).then(
      () => this.#ended("client"),
      (error) => this.#failed(error, "client", handle),
    );
    const down = pipe(target, client, (n) => {
      if (tracksIdle) this.#lastActivity = performance.now();
      handle.delivered("down", n);
    }, () => this.#clientEnded).then(
      () => this.#ended("target"),
      (error) => this.#failed(error, "target", handle),
    );
    await Promise.all([up, down]);
  }

  #ended(side: "client" | "target"): void {
    this.#firstEnd ??= side;
    if (side === "client") this.#clientEnded = true;
    else this.#targetEnded = true;
  }

  #failed(error: unknown, reading: "client" | "target", handle: SessionHandle): void {
    if (this.#reason) return; // We closed the sockets ourselves; that is not an I/O error.
    const writing = reading === "client" ? "target" : "client";
    const side = error instanceof PipeError && error.side === "destination" ? writing : reading;
    this.#error = `${side}: ${error instanceof Error ? error.message : String(error)}`;
    this.#reason = "error";
    handle.error(this.#error);
    this.close("error");
  }

  #armIdleTimer(): void {
    const idle = this.setup.rule.idleTimeoutMs;
    if (idle <= 0) return;
    const check = () => {
      const quiet = performance.now() - this.#lastActivity;
      if (quiet >= idle) this.close("idle-timeout");
      else this.#idleTimer = setTimeout(check, idle - quiet);
    };
    this.#idleTimer = setTimeout(check, idle);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
