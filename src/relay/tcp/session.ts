/**
 * One TCP session: connect to the target, relay both directions with
 * half-close, enforce the idle timeout, and report how it ended.
 *
 * @module
 */
import type { PassRule } from "../../config/types.ts";
import { formatDuration } from "../../config/duration.ts";
import type { DisconnectReason, SessionEvent } from "../../log/events.ts";
import { countBytes, type Counters } from "../../status/stats.ts";
import { logEvent, type RelayContext } from "../context.ts";
import type { Admission } from "../limits.ts";
import type { LiveSession } from "../sessions.ts";
import type { Target } from "../../rules/plan.ts";
import { describeIoError, pipe, PipeError } from "./pipe.ts";

/** Who and where a session is, as its log events name them. */
export interface SessionEnds {
  /** `ip:port` of the client (IPv4-mapped addresses shown as IPv4). */
  readonly client: string;
  /** `ip:port` the client connected to. */
  readonly listen: string;
  readonly target: Target;
  readonly targetText: string;
}

/** A relayed TCP connection from accept to close. */
export class TcpSession implements LiveSession {
  readonly #started = Date.now();
  #lastActivity = performance.now();
  #bytesUp = 0;
  #bytesDown = 0;
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

  constructor(
    readonly listenerKey: string,
    readonly rule: PassRule,
    readonly ends: SessionEnds,
    readonly client: Deno.TcpConn,
    readonly admission: Admission,
    readonly counters: Counters[],
    readonly context: RelayContext,
  ) {}

  /** Ends the session now; the first reason given is the one reported. */
  close(reason: DisconnectReason): void {
    this.#reason ??= reason;
    this.#connecting?.abort();
    closeQuietly(this.client);
    if (this.#targetConn) closeQuietly(this.#targetConn);
  }

  /** Runs the session to its end. Never throws. */
  async run(): Promise<void> {
    this.context.sessions.add(this);
    try {
      const target = await this.#connect();
      if (target) await this.#relay(target);
    } finally {
      clearTimeout(this.#idleTimer);
      closeQuietly(this.client);
      if (this.#targetConn) closeQuietly(this.#targetConn);
      this.admission.release();
      for (const c of this.counters) c.active--;
      this.context.sessions.delete(this);
    }
  }

  #event(fields: Pick<SessionEvent, "event"> & Partial<SessionEvent>): void {
    logEvent(this.context.log, {
      action: "pass",
      rule: this.rule.name,
      protocol: "tcp",
      client: this.ends.client,
      listen: this.ends.listen,
      target: this.ends.targetText,
      ...fields,
    }, this.rule);
  }

  async #connect(): Promise<Deno.TcpConn | undefined> {
    const connecting = this.#connecting = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      connecting.abort();
    }, this.rule.connectTimeoutMs);
    try {
      const conn = await Deno.connect({
        hostname: this.ends.target.host,
        port: this.ends.target.port,
        signal: connecting.signal,
      });
      if (this.#reason) {
        // Closed (drain, shutdown) while connecting.
        closeQuietly(conn);
        this.#disconnect();
        return undefined;
      }
      this.#targetConn = conn;
      return conn;
    } catch (error) {
      if (this.#reason) {
        this.#disconnect();
        return undefined;
      }
      const cause = timedOut
        ? `connect timeout after ${formatDuration(this.rule.connectTimeoutMs)}`
        : describeConnectError(error);
      for (const c of this.counters) c.errors++;
      this.#reason = "error";
      this.#error = cause;
      this.#event({ event: "error", error: cause });
      return undefined;
    } finally {
      clearTimeout(timer);
      this.#connecting = undefined;
    }
  }

  async #relay(target: Deno.TcpConn): Promise<void> {
    for (const conn of [this.client, target]) {
      try {
        conn.setNoDelay(true);
        conn.setKeepAlive(true);
      } catch {
        // The peer may already be gone; the relay below reports that.
      }
    }
    this.#event({ event: "connect" });
    this.#armIdleTimer();

    const wantsData = this.rule.log.has("data");
    const tracksIdle = this.rule.idleTimeoutMs > 0;
    const up = pipe(this.client, target, (n) => {
      this.#bytesUp += n;
      if (tracksIdle) this.#lastActivity = performance.now();
      countBytes(this.counters, n, 0);
      if (wantsData) this.#event({ event: "data", bytes: n, direction: "up" });
    }, () => this.#targetEnded).then(
      () => this.#ended("client"),
      (error) => this.#failed(error, "client"),
    );
    const down = pipe(target, this.client, (n) => {
      this.#bytesDown += n;
      if (tracksIdle) this.#lastActivity = performance.now();
      countBytes(this.counters, 0, n);
      if (wantsData) {
        this.#event({ event: "data", bytes: n, direction: "down" });
      }
    }, () => this.#clientEnded).then(
      () => this.#ended("target"),
      (error) => this.#failed(error, "target"),
    );
    await Promise.all([up, down]);
    this.#disconnect();
  }

  #ended(side: "client" | "target"): void {
    this.#firstEnd ??= side;
    if (side === "client") this.#clientEnded = true;
    else this.#targetEnded = true;
  }

  #failed(error: unknown, reading: "client" | "target"): void {
    if (this.#reason) return; // We closed the sockets ourselves; that is not an I/O error.
    const writing = reading === "client" ? "target" : "client";
    const side = error instanceof PipeError && error.side === "destination" ? writing : reading;
    this.#error = `${side}: ${error instanceof Error ? error.message : String(error)}`;
    this.#reason = "error";
    for (const c of this.counters) c.errors++;
    this.#event({ event: "error", error: this.#error });
    this.close("error");
  }

  #disconnect(): void {
    const reason: DisconnectReason = this.#reason ??
      (this.#firstEnd === "target" ? "target-closed" : "client-closed");
    this.#event({
      event: "disconnect",
      bytes_up: this.#bytesUp,
      bytes_down: this.#bytesDown,
      duration_ms: Date.now() - this.#started,
      reason,
      ...(this.#error !== undefined ? { error: this.#error } : {}),
    });
  }

  #armIdleTimer(): void {
    const idle = this.rule.idleTimeoutMs;
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

/** Names why a target could not be reached. */
export function describeConnectError(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) {
    return "connection refused";
  }
  if (error instanceof Deno.errors.TimedOut) return "connect timed out";
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return "address not available";
  }
  const message = error instanceof Error ? error.message : String(error);
  if (
    /lookup address|Name or service not known|No address associated/i.test(
      message,
    )
  ) {
    return `cannot resolve host: ${message.replace(/^.*?: /, "")}`;
  }
  if (/unreachable/i.test(message)) {
    return message.replace(/ \(os error \d+\)$/, "").toLowerCase();
  }
  return describeIoError(error);
}
