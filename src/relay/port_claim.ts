/**
 * How a TCP listener takes its port. On Linux every TCP listener (relay and
 * status endpoint) is bound with SO_REUSEPORT, so that `run --takeover` can
 * bind a new instance beside a running one. A normal start must still fail
 * when anything holds the port: it first binds without SO_REUSEPORT, which the
 * kernel refuses while any socket holds the port, lets go and binds again with
 * it. (The two binds are microseconds apart: two instances started in that
 * very window could both succeed.)
 *
 * Elsewhere Deno sets no SO_REUSEPORT: a takeover binds each port once the old
 * instance has let go of it.
 *
 * @module
 */

/** `alone`: refused if anything holds the port; `beside`: joins a running instance's socket. */
export type PortClaim = "alone" | "beside";

/** Whether TCP listeners can share a port (SO_REUSEPORT): Linux. */
export const PORTS_SHARE = Deno.build.os === "linux";

/** Binds a TCP listener on `hostname:port` as `claim` says; throws as `Deno.listen` does. */
export function listenTcp(hostname: string, port: number, claim: PortClaim): Deno.TcpListener {
  if (!PORTS_SHARE) return Deno.listen({ hostname, port });
  if (claim === "alone") {
    const probe = Deno.listen({ hostname, port });
    port = probe.addr.port;
    probe.close();
  }
  return Deno.listen({ hostname, port, reusePort: true });
}
