/**
 * The one place outgoing traffic starts: every TCP connection to a target
 * (sessions, health checks and `check --probe`) and every UDP upstream
 * socket, from the rule's source address where it sets one.
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import { parseClientAddress } from "../config/network.ts";
import type { SourcePlan, Target } from "../rules/plan.ts";
import { denoError, NodeConn, type RelayConn } from "./tcp/conn.ts";
import { type Sweepable, Sweeper } from "./sweeper.ts";

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
   * Connects to `target` within `timeoutMs`, from `source` if given. Aborting
   * `cancel` gives up (the dialer also aborts it when the time is up, and then
   * throws {@linkcode DialTimeout}).
   */
  tcp(
    target: Target,
    timeoutMs: number,
    cancel: AbortController,
    source?: SourcePlan | null,
  ): Promise<RelayConn>;
  /** Resolves `target` and opens a UDP socket toward it, bound to `source` if given. */
  udp(target: Target, source?: SourcePlan | null): Promise<UdpUpstream>;
}

/** The target's address: as written, or what the system resolver gives for a name (of `family`). */
export async function resolveHost(host: string, family?: 4 | 6): Promise<string> {
  if (parseClientAddress(host)) return host;
  const { lookup } = await import("node:dns/promises");
  return (await lookup(host, family ? { family } : {})).address;
}

/** The source address for a target's family, resolving a target name if need be. */
async function sourceFor(
  target: Target,
  source: SourcePlan,
): Promise<{ address: string; local: string }> {
  const family = source.v4 && !source.v6 ? 4 : source.v6 && !source.v4 ? 6 : undefined;
  const address = await resolveHost(target.host, family);
  const local = address.includes(":") ? source.v6 : source.v4;
  if (local === null) {
    throw new Deno.errors.AddrNotAvailable(
      `source ${source.text} has no IPv${address.includes(":") ? 6 : 4} address for ${address}`,
    );
  }
  return { address, local };
}

/**
 * How late a connect timeout may fire. One coarse timer checks every pending
 * connect: a timer of its own per connect cost about 2.5% of the time per
 * new connection.
 */
export const CONNECT_TIMEOUT_GRANULARITY_MS = 50;
const pendingConnects = new Sweeper(CONNECT_TIMEOUT_GRANULARITY_MS);

/** A connect in progress, aborted when its deadline passes. */
class ConnectDeadline implements Sweepable {
  timedOut = false;

  constructor(readonly deadline: number, readonly cancel: AbortController) {}

  sweep(now: number): void {
    if (now < this.deadline) return;
    this.timedOut = true;
    pendingConnects.delete(this);
    this.cancel.abort();
  }
}

/** Dials with the operating system's sockets. */
export const systemDialer: Dialer = {
  async tcp(target, timeoutMs, cancel, source) {
    const deadline = new ConnectDeadline(performance.now() + timeoutMs, cancel);
    pendingConnects.add(deadline);
    try {
      if (!source) {
        return await Deno.connect({
          hostname: target.host,
          port: target.port,
          signal: cancel.signal,
        });
      }
      const { address, local } = await sourceFor(target, source);
      return await connectFrom(address, target.port, local, cancel.signal);
    } catch (error) {
      throw deadline.timedOut ? new DialTimeout(timeoutMs) : error;
    } finally {
      pendingConnects.delete(deadline);
    }
  },

  async udp(target, source) {
    let address: string;
    let local: string;
    if (source) {
      ({ address, local } = await sourceFor(target, source));
    } else {
      address = await resolveHost(target.host);
      // A loopback target is answered from loopback: no need for a port on every interface.
      const loopback = parseClientAddress(address)?.range() === "loopback";
      local = address.includes(":")
        ? (loopback ? "::1" : "::")
        : (loopback ? "127.0.0.1" : "0.0.0.0");
    }
    const socket = Deno.listenDatagram({ transport: "udp", hostname: local, port: 0 });
    return { socket, target: { transport: "udp", hostname: address, port: target.port } };
  },
};

/** `Deno.connect` cannot bind a source address; `node:net` can. */
async function connectFrom(
  address: string,
  port: number,
  localAddress: string,
  signal: AbortSignal,
): Promise<RelayConn> {
  const net = (await import("node:net")).default;
  return await new Promise<RelayConn>((resolve, reject) => {
    const socket = net.connect({ host: address, port, localAddress, allowHalfOpen: true });
    const onAbort = () => {
      socket.destroy();
      reject(new Deno.errors.Interrupted("connect cancelled"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", () => {
      signal.removeEventListener("abort", onAbort);
      socket.removeAllListeners("error");
      resolve(new NodeConn(socket));
    });
    socket.once("error", (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(denoError(error));
    });
  });
}
