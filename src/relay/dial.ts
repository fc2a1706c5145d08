/**
 * The one place outgoing traffic starts: every TCP connection to a target
 * (sessions and `check --probe`) and every UDP upstream socket. Target
 * choice, a source address or a PROXY header plug in here.
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import { parseClientAddress } from "../config/network.ts";
import type { Target } from "../rules/plan.ts";
import { setLongTimeout } from "./timers.ts";

/** A connect that did not finish within its timeout. */
export class DialTimeout extends Error {
  constructor(readonly timeoutMs: number) {
    super(`connect timeout after ${formatDuration(timeoutMs)}`);
  }
}

/** An open UDP socket toward one target. */
export interface UdpUpstream {
  readonly socket: Deno.DatagramConn;
  /** The target's address, resolved. */
  readonly target: Deno.NetAddr;
}

/** Opens outgoing connections and sockets. */
export interface Dialer {
  /**
   * Connects to `target` within `timeoutMs`. Aborting `cancel` gives up (the
   * dialer also aborts it when the time is up, and then throws {@linkcode DialTimeout}).
   */
  tcp(target: Target, timeoutMs: number, cancel: AbortController): Promise<Deno.TcpConn>;
  /** Resolves `target` and opens an ephemeral UDP socket of its family. */
  udp(target: Target): Promise<UdpUpstream>;
}

/** The target's address: as written, or the first the system resolver gives for a name. */
export async function resolveHost(host: string): Promise<string> {
  if (parseClientAddress(host)) return host;
  const { lookup } = await import("node:dns/promises");
  return (await lookup(host)).address;
}

/** Dials with the operating system's sockets. */
export const systemDialer: Dialer = {
  async tcp(target, timeoutMs, cancel) {
    let timedOut = false;
    const cancelTimer = setLongTimeout(() => {
      timedOut = true;
      cancel.abort();
    }, timeoutMs);
    try {
      return await Deno.connect({
        hostname: target.host,
        port: target.port,
        signal: cancel.signal,
      });
    } catch (error) {
      throw timedOut ? new DialTimeout(timeoutMs) : error;
    } finally {
      cancelTimer();
    }
  },

  async udp(target) {
    const address = await resolveHost(target.host);
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: address.includes(":") ? "::" : "0.0.0.0",
      port: 0,
    });
    return { socket, target: { transport: "udp", hostname: address, port: target.port } };
  },
};
