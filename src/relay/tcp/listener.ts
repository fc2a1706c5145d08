/**
 * A TCP listener: accepts clients, lets the first matching rule and its
 * limits decide, and starts a {@linkcode TcpSession} for each admitted one.
 * The accept loop survives accept errors such as EMFILE (see serve_loop.ts).
 *
 * @module
 */
import { type IpAddress, parseClientAddress } from "../../config/network.ts";
import { formatTarget, type ListenerPlan } from "../../rules/plan.ts";
import { type Decision, LOOP } from "../admission.ts";
import type { RelayHost, RelayListener } from "../host.ts";
import { peerText } from "../peer.ts";
import { serveLoop } from "../serve_loop.ts";
import { TcpSession } from "./session.ts";

/** A bound TCP listener serving one {@linkcode ListenerPlan}. */
export class TcpRelayListener implements RelayListener {
  readonly protocol = "tcp";
  readonly #closed = Promise.withResolvers<void>();
  #stopped = false;
  #serving = false;

  constructor(
    public plan: ListenerPlan,
    readonly listener: Deno.TcpListener,
    readonly host: RelayHost,
  ) {}

  get address(): Deno.NetAddr {
    return this.listener.addr;
  }

  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  serve(): void {
    this.#serving = true;
    const key = () => this.plan.key;
    // Closed once the pending accept has given up: only then is the socket gone.
    serveLoop(() => this.listener.accept(), (conn) => this.#handle(conn), {
      closed: () => this.#stopped,
      failing: (error) => this.host.listenerFailing(key(), "accept", error),
      recovered: (failures) => this.host.listenerRecovered(key(), "accept", failures),
    }).finally(() => this.#closed.resolve());
  }

  replacePlan(plan: ListenerPlan): void {
    this.plan = plan;
  }

  stopAccepting(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      this.listener.close();
    } catch {
      // Already closed.
    }
    if (!this.#serving) this.#closed.resolve();
  }

  #handle(conn: Deno.TcpConn): void {
    const remote = conn.remoteAddr;
    const clientIp = parseClientAddress(remote.hostname);
    const client = peerText(remote, clientIp);
    const listen = peerText(conn.localAddr);
    // A target that leads back here would loop for ever: refuse our own connections.
    const decision = this.host.isOwnConnection(client, listen)
      ? LOOP
      : this.host.decide(this.plan, clientIp, parseClientAddress(conn.localAddr.hostname));
    if (decision instanceof Promise) {
      // A worker asking the main isolate about the rule's limits.
      decision.then((decided) => this.#start(conn, decided, clientIp, client, listen));
    } else this.#start(conn, decision, clientIp, client, listen);
  }

  #start(
    conn: Deno.TcpConn,
    decision: Decision,
    clientIp: IpAddress | null,
    client: string,
    listen: string,
  ): void {
    const remote = conn.remoteAddr;
    if (!decision.pass) {
      this.host.refuse(this.plan.key, decision, {
        protocol: "tcp",
        client,
        clientIp: clientIp?.toString() ?? remote.hostname,
        listen,
      });
      try {
        conn.close();
      } catch {
        // Already gone.
      }
      return;
    }
    const { rule, targets, source, admission } = decision;
    const session = new TcpSession({
      client: conn,
      rule,
      targets,
      source,
      clientIp: clientIp!.toString(),
      dialer: this.host.dialer,
      pool: this.host.targets,
      sweeper: this.host.sweeper,
      isOwnListener: (remote, local) => this.host.isOwnListener(remote, local),
    });
    const handle = this.host.open({
      setup: {
        protocol: "tcp",
        listenerKey: this.plan.key,
        client,
        clientIp: clientIp!.toString(),
        listen,
        target: targets.map(formatTarget).join(", "),
      },
      rule,
      admission,
    }, session);
    session.run(handle);
  }
}
