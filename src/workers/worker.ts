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
import { type BindRefusal, ListenerSet } from "../server/listener_set.ts";
import { prepareMatching } from "../rules/match.ts";
import { rebuildPlanSteps } from "../server/rule_file.ts";
import { runStepsSliced } from "../config/work_steps.ts";
import type { RuleReuse } from "../config/load.ts";
import { Outbox } from "./outbox.ts";
import type { BoundAddresses, FromWorker, ToWorker, WorkerRules } from "./protocol.ts";
import { WorkerHost } from "./worker_host.ts";

/** A worker's listeners and host: the main isolate's messages in, the engine's objects out. */
class WorkerRuntime {
  readonly outbox: Outbox;
  /** The TCP listeners of the rules in force, on the ports the main isolate bound. */
  readonly listeners = new ListenerSet((plan) => this.#open(plan));
  host: WorkerHost | undefined;
  /** Where the main isolate bound each listener of the rules in force. */
  #addresses: BoundAddresses = {};
  /** The rules of the last plan, for the next reload to keep those that did not change. */
  #reuse: RuleReuse | undefined;
  /** The plan being built, if one is (see `#use`). */
  #using: Promise<unknown> = Promise.resolve();

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
        void this.#start(message.rules);
        break;
      }
      case "serve":
        this.listeners.serve();
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

  /**
   * Binds what it can of the first rules and says what it could not: at start
   * the pool gives up on any failure (all or none across isolates); a worker
   * started again after one died serves every listener it could bind.
   * Serving waits until the pool says so.
   */
  async #start(rules: WorkerRules): Promise<void> {
    const { failed } = await this.listeners.apply(await this.#use(rules));
    this.post({ t: "bound", failures: [...failed] });
  }

  /** Applies new rules; answers once removed listeners have let go of their ports. */
  async #reload(rules: WorkerRules): Promise<void> {
    // The main isolate has closed the removed listeners' sockets: from now on the port
    // sends every connection to this isolate's. Stop accepting on them before the
    // plan is built, as the main isolate did.
    for (const listener of this.listeners.values()) {
      if (!rules.addresses[listener.plan.key]) listener.stopAccepting();
    }
    const { failed } = await this.listeners.apply(await this.#use(rules));
    // Every session of the old rules is reported before the answer, so that the
    // reload's summary counts all that it revokes or drains.
    await this.host!.decided();
    this.outbox.flush();
    this.post({ t: "reloaded", failures: [...failed] });
  }

  /**
   * Takes `rules` in force; returns the listeners to serve (TCP, bound by the
   * main isolate). The plan is built in slices, relaying between them on the
   * rules before, then put in force in one step.
   */
  #use(rules: WorkerRules): Promise<ListenerPlan[]> {
    // One at a time, in the order the rules came (a late answer must not let two overlap).
    const used = this.#using.then(() => this.#build(rules));
    this.#using = used.catch(() => {});
    return used;
  }

  async #build(rules: WorkerRules): Promise<ListenerPlan[]> {
    const rebuilt = await runStepsSliced(rebuildPlanSteps(rules.inputs, this.#reuse));
    this.#reuse = rebuilt.reuse;
    const listeners = rebuilt.listeners.filter((plan) =>
      plan.protocol === "tcp" && rules.addresses[plan.key]
    );
    prepareMatching(listeners);
    const host = this.host!;
    host.generation = rules.generation;
    host.targets.useBudgets(rules.budgets);
    relayBuffers.limitBytes = rules.bufferBytes;
    this.#addresses = rules.addresses;
    return listeners;
  }

  /** Opens one TCP listener on the address the main isolate bound it to, sharing the port. */
  #open(plan: ListenerPlan): TcpRelayListener | BindRefusal {
    const { hostname, port } = this.#addresses[plan.key];
    try {
      return new TcpRelayListener(plan, listenTcp(hostname, port, "beside"), this.host!);
    } catch (error) {
      return {
        error: describeBindError(error, port),
        addrInUse: error instanceof Deno.errors.AddrInUse,
      };
    }
  }

  async #stop(): Promise<void> {
    await this.listeners.stopAccepting();
    this.outbox.flush();
    this.post({ t: "stopped" });
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
