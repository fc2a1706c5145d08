/**
 * The main isolate's side of the workers: starts them on the rules in force
 * (all bound or none), answers their admission questions with the rules'
 * limits, turns their session events into the engine's sessions (so the
 * session list, counters, history, alarms and log cover every isolate), passes
 * reloads, health and closes on, and restarts a worker that dies.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { PassRule } from "../config/types.ts";
import type { Admission } from "../relay/limits.ts";
import type { SessionHandle } from "../relay/session.ts";
import type { Engine } from "../server/engine.ts";
import type {
  FromWorker,
  ToWorker,
  WorkerBindFailure,
  WorkerEvent,
  WorkerRules,
} from "./protocol.ts";

/** How long a worker may take to bind, reload or stop before it counts as failed. */
const ANSWER_TIMEOUT_MS = 10_000;
/** The first wait before a dead worker is started again; it doubles up to a minute. */
const FIRST_RESTART_DELAY_MS = 500;

const NO_ADMISSION: Admission = { release() {} };

/** One worker and the sessions it reported. */
class WorkerSlot {
  worker: Worker | undefined;
  readonly sessions = new Map<number, SessionHandle>();
  /** Slots the rules' limits granted, until the session that holds one opens. */
  readonly admissions = new Map<number, Admission>();
  /** New clients this worker decided (sessions opened and refused), since start. */
  clients = 0;
  /** Waiting for the worker's answer to start, reload or stop. */
  answer: { readonly kind: FromWorker["t"]; resolve(message: FromWorker | null): void } | null =
    null;
  restartDelay = FIRST_RESTART_DELAY_MS;

  constructor(readonly index: number) {}
}

/** The worker isolates of a daemon. */
export class WorkerPool {
  readonly #slots: WorkerSlot[];
  #rules: WorkerRules;
  #stopping: Promise<void> | undefined;

  private constructor(
    count: number,
    rules: WorkerRules,
    readonly engine: Engine,
    readonly log: Logger,
    readonly module: string | URL,
  ) {
    this.#slots = Array.from({ length: count }, (_, i) => new WorkerSlot(i + 1));
    this.#rules = rules;
  }

  /**
   * Starts `count` workers on `rules` and waits until each has bound every
   * TCP listener. Any failure stops them all and is returned.
   */
  static async start(
    count: number,
    rules: WorkerRules,
    engine: Engine,
    log: Logger,
    module: string | URL,
  ): Promise<{ pool: WorkerPool } | { failures: WorkerBindFailure[] }> {
    const pool = new WorkerPool(count, rules, engine, log, module);
    const answers = await Promise.all(pool.#slots.map((slot) => pool.#launch(slot)));
    const failures = answers.flat();
    if (failures.length > 0) {
      pool.terminate();
      return { failures };
    }
    engine.targets.watch((status) => pool.#broadcast({ t: "health", status }));
    engine.alsoStopAccepting(() => pool.stopAccepting());
    return { pool };
  }

  /** Number of workers. */
  get size(): number {
    return this.#slots.length;
  }

  /** New clients each worker decided (sessions opened and refused), since start. */
  clientsPerWorker(): number[] {
    return this.#slots.map((slot) => slot.clients);
  }

  /** Every worker accepts from now on. */
  serve(): void {
    this.#broadcast({ t: "serve" });
  }

  /** Starts the slot's worker and waits for it to bind; resolves to what it could not bind. */
  async #launch(slot: WorkerSlot): Promise<WorkerBindFailure[]> {
    const worker = new Worker(this.module, { type: "module", name: `portbounce-${slot.index}` });
    slot.worker = worker;
    worker.onmessage = (event: MessageEvent<FromWorker>) => this.#received(slot, event.data);
    worker.onerror = (event) => {
      // Unhandled, a worker's error would end the whole process.
      event.preventDefault();
      this.#died(slot, event.message ?? String(event));
    };
    worker.onmessageerror = () => this.#died(slot, "a message could not be read");
    // Messages sent before the worker has loaded would be lost.
    if (await this.#ask(slot, "ready", null) === null) {
      return [{ key: `worker ${slot.index}`, error: "did not load within 10s" }];
    }
    const answer = this.#ask(slot, "bound", {
      t: "start",
      rules: this.#rules,
      health: this.engine.targets.statuses(),
    });
    const bound = await answer;
    if (bound === null) {
      return [{ key: `worker ${slot.index}`, error: "did not start within 10s" }];
    }
    return bound.t === "bound" ? bound.failures : [];
  }

  /** Sends `message` and waits for the answer of kind `kind` (null: none in time, or it died). */
  #ask(
    slot: WorkerSlot,
    kind: FromWorker["t"],
    message: ToWorker | null,
  ): Promise<FromWorker | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(null), ANSWER_TIMEOUT_MS);
      const done = (answer: FromWorker | null) => {
        clearTimeout(timer);
        slot.answer = null;
        resolve(answer);
      };
      slot.answer = { kind, resolve: done };
      if (message !== null) slot.worker?.postMessage(message);
    });
  }

  #broadcast(message: ToWorker): void {
    for (const slot of this.#slots) slot.worker?.postMessage(message);
  }

  /**
   * Gives every worker the reloaded rules; resolves once each has applied
   * them, to the listeners a worker could not bind.
   */
  async reload(rules: WorkerRules): Promise<WorkerBindFailure[]> {
    this.#rules = rules;
    const answers = await Promise.all(
      this.#slots.map((slot) => this.#ask(slot, "reloaded", { t: "reload", rules })),
    );
    return answers.flatMap((answer, i) =>
      answer === null
        ? [{ key: `worker ${i + 1}`, error: "did not apply the reload within 10s" }]
        : answer.t === "reloaded"
        ? answer.failures.map((f) => ({ ...f, key: `${f.key} (worker ${i + 1})` }))
        : []
    );
  }

  /** Workers close their listeners; resolves once they have (live sessions go on). */
  stopAccepting(): Promise<void> {
    this.#stopping ??= Promise.all(
      this.#slots.map((slot) => this.#ask(slot, "stopped", { t: "stop" })),
    ).then(() => {});
    return this.#stopping;
  }

  /** Ends every worker (their sessions must have ended). */
  terminate(): void {
    for (const slot of this.#slots) {
      slot.worker?.terminate();
      slot.worker = undefined;
    }
  }

  #received(slot: WorkerSlot, message: FromWorker): void {
    if (message.t === "events") {
      for (const event of message.events) this.#event(slot, event);
      return;
    }
    if (slot.answer?.kind === message.t) slot.answer.resolve(message);
  }

  #event(slot: WorkerSlot, event: WorkerEvent): void {
    const { engine } = this;
    switch (event.t) {
      case "admit": {
        const admission = engine.admitRemote(event.rule, event.client);
        const refused = "refused" in admission ? admission.refused : null;
        if (!("refused" in admission)) slot.admissions.set(event.request, admission);
        slot.worker?.postMessage({ t: "admitted", request: event.request, refused });
        return;
      }
      case "open": {
        slot.clients++;
        const rule = engine.ruleNamed(event.rule);
        const admission = event.admission === null
          ? NO_ADMISSION
          : slot.admissions.get(event.admission) ?? NO_ADMISSION;
        if (event.admission !== null) slot.admissions.delete(event.admission);
        if (!rule || rule.action !== "pass") {
          // Its rule is gone from both generations: end it as a reload would.
          admission.release();
          slot.worker?.postMessage({ t: "close", id: event.id, reason: "drained" });
          return;
        }
        const handle = engine.open({ setup: event.setup, rule: rule as PassRule, admission }, {
          close: (reason) => slot.worker?.postMessage({ t: "close", id: event.id, reason }),
        }, event.at);
        slot.sessions.set(event.id, handle);
        return;
      }
      case "connected":
        slot.sessions.get(event.id)?.connected(event);
        return;
      case "attempt":
        slot.sessions.get(event.id)?.attemptFailed(event.target, event.error);
        return;
      case "bytes": {
        const handle = slot.sessions.get(event.id);
        if (event.up > 0) handle?.delivered("up", event.up);
        if (event.down > 0) handle?.delivered("down", event.down);
        return;
      }
      case "error":
        slot.sessions.get(event.id)?.error(event.message);
        return;
      case "ended":
        slot.sessions.get(event.id)?.ended(event.reason, event.error);
        slot.sessions.delete(event.id);
        return;
      case "refuse": {
        slot.clients++;
        const rule = event.rule === null ? null : engine.ruleNamed(event.rule);
        engine.refuse(event.listenerKey, { pass: false, rule, reason: event.reason }, event.place);
        return;
      }
      case "target":
        engine.targets.reported(event.target, event.error);
        return;
      case "listener":
        if (event.error !== null) engine.listenerFailing(event.key, event.verb, event.error);
        else engine.listenerRecovered(event.key, event.verb, event.failures);
        return;
    }
  }

  /** A worker failed: its sessions are gone with it; start another unless stopping. */
  #died(slot: WorkerSlot, why: string): void {
    const worker = slot.worker;
    if (!worker) return;
    slot.worker = undefined;
    worker.terminate();
    slot.answer?.resolve(null);
    for (const handle of slot.sessions.values()) {
      handle.ended("error", `worker ${slot.index} failed: ${why}`);
    }
    slot.sessions.clear();
    for (const admission of slot.admissions.values()) admission.release();
    slot.admissions.clear();
    if (this.#stopping) {
      this.log.error("worker {worker} failed while stopping: {error}", {
        worker: slot.index,
        error: why,
      });
      return;
    }
    const delay = slot.restartDelay;
    slot.restartDelay = Math.min(60_000, delay * 2);
    this.log.error("worker {worker} failed: {error}; starting it again in {delay} ms", {
      worker: slot.index,
      error: why,
      delay,
    });
    setTimeout(async () => {
      if (this.#stopping) return;
      const failures = await this.#launch(slot);
      for (const failure of failures) {
        this.log.error("worker {worker}: cannot bind {listener}: {error}", {
          worker: slot.index,
          listener: failure.key,
          error: failure.error,
        });
      }
      if (slot.worker) {
        slot.worker.postMessage({ t: "serve" });
        this.log.info("worker {worker} started again", { worker: slot.index });
      }
    }, delay);
  }
}
