/**
 * How a TCP listener takes its port.
 *
 * - `exclusive`: a plain bind, no SO_REUSEPORT: nothing can join it. What a
 *   bouncer without a pid file and without workers binds (`forward`, CI runs).
 * - `shareable`: SO_REUSEPORT, so that this instance's workers, or a later
 *   `run --takeover`, can bind beside it; the kernel lets only processes of
 *   the same user join. It still fails when anything holds the port: it
 *   first binds without SO_REUSEPORT (refused while any socket holds the
 *   port), lets go and binds again with it. (The two binds are microseconds
 *   apart: two instances started in that very window could both succeed.)
 * - `beside`: SO_REUSEPORT at once, joining a running instance's socket (a
 *   takeover, for the ports the running instance holds; workers).
 *
 * Only on Linux: elsewhere Deno sets no SO_REUSEPORT, every bind is
 * exclusive, and a takeover binds each port once the old instance let go.
 *
 * @module
 */

/** See the module documentation. */
export type PortClaim = "exclusive" | "shareable" | "beside";

/** Whether TCP listeners can share a port (SO_REUSEPORT): Linux. */
export const PORTS_SHARE = Deno.build.os === "linux";

/** Binds a TCP listener on `hostname:port` as `claim` says; throws as `Deno.listen` does. */
export function listenTcp(hostname: string, port: number, claim: PortClaim): Deno.TcpListener {
  if (!PORTS_SHARE || claim === "exclusive") return Deno.listen({ hostname, port });
  if (claim === "shareable") {
    const probe = Deno.listen({ hostname, port });
    port = probe.addr.port;
    probe.close();
  }
  return Deno.listen({ hostname, port, reusePort: true });
}
