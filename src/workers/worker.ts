/**
 * A worker isolate: accepts TCP connections on every TCP listener of the
 * rules in force, on the ports the main isolate bound (SO_REUSEPORT: the
 * kernel spreads new connections over the isolates), and relays them. Started
 * by {@linkcode WorkerPool}; runs when this module is loaded in a worker.
 *
 * @module
 */
import type { ListenerPlan } from "../rules/plan.ts";
import { setSharedClock } from "../relay/bandwidth.ts";
import { relayBuffers } from "../relay/buffer_pool.ts";
import { listenTcp } from "../relay/port_claim.ts";
import { TcpRelayListener } from "../relay/tcp/listener.ts";
import { describeBindError } from "../relay/errors.ts";
import { rebuildPlan } from "../server/rule_file.ts";
import { Outbox } from "./outbox.ts";
import type {
  BoundAddresses,
  FromWorker,
  ToWorker,
  WorkerBindFailure,
  WorkerRules,
} from "./protocol.ts";
import { WorkerHost } from "./worker_host.ts";

/** The worker's listeners and host. */
class WorkerRuntime {
  readonly listeners = new Map<string, TcpRelayListener>();
  readonly outbox: Outbox;
  host: WorkerHost | undefined;

  constructor(readonly post: (message: FromWorker) => void) {
    this.outbox = new Outbox(post);
  }

  handle(message: ToWorker): void {
    switch (message.t) {
      case "start": {
        this.host = new WorkerHost(
          this.outbox,
          () => this.listeners.values(),
          message.rules.sweepIntervalMs,
        );
        setSharedClock(message.clock);
        for (const status of message.health) this.host.targets.health(status);
        this.post({ t: "bound", failures: this.#apply(message.rules) });
        break;
      }
      case "serve":
        this.#serving = true;
        for (const listener of this.listeners.values()) listener.serve();
        break;
      case "reload":
        void this.#reload(message.rules);
        break;
      case "admitted":
        this.host?.admitted(message.request, message.refused);
        break;
      case "close":
        this.host?.sessions.get(message.id)?.close(message.reason);
        break;
      case "health":
        this.host?.targets.health(message.status);
        break;
      case "stop":
        this.#stop();
        break;
    }
  }

  /** Applies new rules; answers once removed listeners have let go of their ports. */
  async #reload(rules: WorkerRules): Promise<void> {
    const before = [...this.listeners.values()];
    const failures = this.#apply(rules);
    const kept = new Set(this.listeners.values());
    const removed = before.filter((listener) => !kept.has(listener));
    await Promise.all(removed.map((listener) => listener.closed));
    // Every session of the old rules is reported before the answer, so that the
    // reload's summary counts all that it revokes or drains.
    await this.host!.decided();
    this.outbox.flush();
    this.post({ t: "reloaded", failures });
  }

  /** Serves `rules`: keeps listeners that stay, closes removed ones, binds new ones. */
  #apply(rules: WorkerRules): WorkerBindFailure[] {
    const host = this.host!;
    host.generation = rules.generation;
    const { listeners } = rebuildPlan(rules.inputs);
    host.targets.useBudgets(rules.budgets);
    relayBuffers.limitBytes = rules.bufferBytes;
    const wanted = new Map(
      listeners.filter((p) => p.protocol === "tcp" && rules.addresses[p.key]).map((
        p,
      ) => [p.key, p]),
    );
    for (const [key, listener] of this.listeners) {
      const next = wanted.get(key);
      if (next) listener.replacePlan(next);
      else {
        this.listeners.delete(key);
        listener.stopAccepting();
      }
    }
    const failures: WorkerBindFailure[] = [];
    for (const [key, plan] of wanted) {
      if (this.listeners.has(key)) continue;
      const opened = bind(plan, rules.addresses, host);
      if ("error" in opened) failures.push({ key, error: opened.error });
      else {
        this.listeners.set(key, opened);
        // At start, serving waits until every isolate has bound (all or none).
        if (this.#serving) opened.serve();
      }
    }
    return failures;
  }

  /** Whether the first rule set is served (later listeners serve as they are bound). */
  #serving = false;

  async #stop(): Promise<void> {
    const listeners = [...this.listeners.values()];
    this.listeners.clear();
    for (const listener of listeners) listener.stopAccepting();
    await Promise.all(listeners.map((l) => l.closed));
    this.outbox.flush();
    this.post({ t: "stopped" });
  }
}

/** Binds one TCP listener on the address the main isolate bound it to, sharing the port. */
function bind(
  plan: ListenerPlan,
  addresses: BoundAddresses,
  host: WorkerHost,
): TcpRelayListener | { error: string } {
  const { hostname, port } = addresses[plan.key];
  try {
    return new TcpRelayListener(plan, listenTcp(hostname, port, "beside"), host);
  } catch (error) {
    return { error: describeBindError(error, port) };
  }
}

/** Whether this module runs as a worker (and not imported by the main isolate). */
export const IN_WORKER = "WorkerGlobalScope" in globalThis;

if (IN_WORKER) {
  const scope = globalThis as unknown as {
    postMessage(message: FromWorker): void;
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  };
  const runtime = new WorkerRuntime((message) => scope.postMessage(message));
  scope.onmessage = (event) => runtime.handle(event.data);
  scope.postMessage({ t: "ready" });
}
