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
import type { PassRule, Rule } from "../config/types.ts";
import type { Refusal } from "../relay/admission.ts";
import type { TargetStatus } from "../relay/health.ts";
import type { Admitted, RefusalPlace } from "../relay/host.ts";
import type { Admission } from "../relay/limits.ts";
import type { BlockReason, Closable, DisconnectReason, SessionHandle } from "../relay/session.ts";
import { sharedNow } from "../relay/bandwidth.ts";
import type { BindFailure } from "../server/listener_set.ts";
import type { FromWorker, ToWorker, WorkerEvent, WorkerRules } from "./protocol.ts";

/**
 * What accounts for the workers' sessions: the main isolate's engine. Limits
 * are asked of it, sessions and refusals reported to it, and it says how
 * targets are; the pool is only the transport between the two.
 */
export interface WorkerPoolHost {
  /** Asks `rule`'s limits for a worker's new session from `client`. */
  admitRemote(ruleName: string, client: string): Admission | { refused: BlockReason };
  /** Counts a worker's session its rule let in without asking. */
  holdRemote(rule: Rule, client: string): Admission;
  /** The rule of that name in force, or before the last reload. */
  ruleNamed(name: string): Rule | null;
  /** Tracks a worker's session, decided under rule set `generation`. */
  openRemote(
    admitted: Admitted,
    session: Closable,
    startedAt: number,
    generation: number,
  ): SessionHandle;
  refuse(listenerKey: string, refusal: Refusal, place: RefusalPlace): void;
  listenerFailing(listenerKey: string, verb: "accept" | "receive", error: unknown): void;
  listenerRecovered(listenerKey: string, verb: "accept" | "receive", failures: number): void;
  /** Also stops `stop` when the host's listeners stop accepting. */
  alsoStopAccepting(stop: () => Promise<void>): void;
  readonly targets: {
    /** A worker's session connected to target `key` (`error` null) or failed to. */
    reported(key: string, error: string | null): void;
    /** How every target is now. */
    statuses(): TargetStatus[];
    /** Calls `watcher` whenever a target's health changes. */
    watch(watcher: (status: TargetStatus) => void): void;
  };
}

/** How long a worker may take to bind, reload or stop before it counts as failed. */
const ANSWER_TIMEOUT_MS = 10_000;
/** The first wait before a dead worker is started again; it doubles up to a minute. */
export const FIRST_RESTART_DELAY_MS = 500;

const NO_ADMISSION: Admission = { release() {} };

/** One worker and the sessions it reported. */
class WorkerSlot {
  worker: Worker | undefined;
  readonly sessions = new Map<number, SessionHandle>();
  /** Slots the rules' limits granted, until the session that holds one opens. */
  readonly admissions = new Map<number, Admission>();
  /** New clients this worker decided (sessions opened and refused), since start. */
  clients = 0;
  /** Waiting for the worker's answers, by kind: a stop may come while a reload waits. */
  readonly answers = new Map<FromWorker["t"], ((message: FromWorker | null) => void)[]>();
  /** Bound and given the rules; false while (re)starting and once dead. */
  running = false;
  /** The rules this worker was last given. */
  rules: WorkerRules | undefined;
  restartTimer: ReturnType<typeof setTimeout> | undefined;

  /** Gives every pending wait `answer` (null: the worker is gone). */
  answerAll(answer: FromWorker | null): void {
    const waiting = [...this.answers.values()].flat();
    this.answers.clear();
    for (const resolve of waiting) resolve(answer);
  }

  constructor(readonly index: number, public restartDelay: number) {}
}

/** The worker isolates of a daemon. */
export class WorkerPool {
  readonly #slots: WorkerSlot[];
  #rules: WorkerRules;
  #stopping: Promise<void> | undefined;
  /** Ended for good (start failed, or the daemon is done): nothing restarts. */
  #terminated = false;

  private constructor(
    count: number,
    rules: WorkerRules,
    readonly engine: WorkerPoolHost,
    readonly log: Logger,
    readonly module: string | URL,
    firstRestartDelayMs: number,
  ) {
    this.#slots = Array.from(
      { length: count },
      (_, i) => new WorkerSlot(i + 1, firstRestartDelayMs),
    );
    this.#rules = rules;
  }

  /**
   * Starts `count` workers on `rules` and waits until each has bound every
   * TCP listener. Any failure stops them all and is returned.
   */
  static async start(
    count: number,
    rules: WorkerRules,
    engine: WorkerPoolHost,
    log: Logger,
    module: string | URL,
    firstRestartDelayMs = FIRST_RESTART_DELAY_MS,
  ): Promise<{ pool: WorkerPool } | { failures: BindFailure[] }> {
    const pool = new WorkerPool(count, rules, engine, log, module, firstRestartDelayMs);
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

  /** The rules the workers are given (the last reload's). */
  get rules(): WorkerRules {
    return this.#rules;
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
  async #launch(slot: WorkerSlot): Promise<BindFailure[]> {
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
    slot.rules = this.#rules;
    const bound = await this.#ask(slot, "bound", {
      t: "start",
      rules: this.#rules,
      health: this.engine.targets.statuses(),
      clock: sharedNow(),
    });
    if (bound === null) {
      return [{
        key: `worker ${slot.index}`,
        error: slot.worker ? "did not start within 10s" : "failed while starting",
      }];
    }
    const failures = bound.t === "bound" ? bound.failures : [];
    if (failures.length === 0) slot.running = true;
    return failures;
  }

  /** Sends `message` and waits for the answer of kind `kind` (null: none in time, or it died). */
  #ask(
    slot: WorkerSlot,
    kind: FromWorker["t"],
    message: ToWorker | null,
  ): Promise<FromWorker | null> {
    if (!slot.worker) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiting = slot.answers.get(kind) ?? [];
      slot.answers.set(kind, waiting);
      const timer = setTimeout(() => {
        waiting.splice(waiting.indexOf(done), 1);
        resolve(null);
      }, ANSWER_TIMEOUT_MS);
      const done = (answer: FromWorker | null) => {
        clearTimeout(timer);
        resolve(answer);
      };
      waiting.push(done);
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
  async reload(rules: WorkerRules): Promise<BindFailure[]> {
    this.#rules = rules;
    // A worker being started again is given the new rules once it runs (see #died).
    const running = this.#slots.filter((slot) => slot.running);
    const answers = await Promise.all(running.map((slot) => this.#giveRules(slot, rules)));
    return answers.flatMap((answer, i) =>
      answer === null
        ? (running[i].worker
          ? [{ key: `worker ${running[i].index}`, error: "did not apply the reload within 10s" }]
          : []) // It died meanwhile; it starts again on these rules.
        : answer.t === "reloaded"
        ? answer.failures.map((f) => ({ ...f, key: `${f.key} (worker ${running[i].index})` }))
        : []
    );
  }

  #giveRules(slot: WorkerSlot, rules: WorkerRules): Promise<FromWorker | null> {
    slot.rules = rules;
    return this.#ask(slot, "reloaded", { t: "reload", rules });
  }

  /** Workers close their listeners; resolves once they have (live sessions go on). */
  stopAccepting(): Promise<void> {
    // Only running workers have listeners; one being started again is ended when it has.
    this.#stopping ??= Promise.all(
      this.#slots.filter((slot) => slot.running).map((slot) =>
        this.#ask(slot, "stopped", { t: "stop" })
      ),
    ).then(() => {});
    return this.#stopping;
  }

  /** Ends every worker (their sessions must have ended). */
  terminate(): void {
    this.#terminated = true;
    for (const slot of this.#slots) {
      clearTimeout(slot.restartTimer);
      slot.worker?.terminate();
      slot.worker = undefined;
      slot.running = false;
      slot.answerAll(null);
    }
  }

  #received(slot: WorkerSlot, message: FromWorker): void {
    if (message.t === "events") {
      for (const event of message.events) this.#event(slot, event);
      return;
    }
    const waiting = slot.answers.get(message.t);
    if (waiting?.length) waiting.shift()!(message);
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
        const granted = event.admission === null ? undefined : slot.admissions.get(event.admission);
        if (event.admission !== null) slot.admissions.delete(event.admission);
        // Ids are the worker's own: a close must reach this worker, not one started later.
        const worker = slot.worker;
        const close = (reason: DisconnectReason) => {
          if (slot.worker === worker) worker?.postMessage({ t: "close", id: event.id, reason });
        };
        if (!rule || rule.action !== "pass") {
          // Its rule is gone from both generations: end it as a reload would.
          granted?.release();
          close("drained");
          return;
        }
        // A session let in without asking still counts against the limits in force,
        // as every session does with one isolate.
        const admission = granted ??
          (event.admission === null ? engine.holdRemote(rule, event.setup.clientIp) : NO_ADMISSION);
        const handle = engine.openRemote(
          { setup: event.setup, rule: rule as PassRule, admission },
          { close },
          event.at,
          event.generation,
        );
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
    slot.running = false;
    worker.terminate();
    slot.answerAll(null);
    for (const handle of slot.sessions.values()) {
      handle.ended("error", `worker ${slot.index} failed: ${why}`);
    }
    slot.sessions.clear();
    for (const admission of slot.admissions.values()) admission.release();
    slot.admissions.clear();
    if (this.#terminated) return;
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
    slot.restartTimer = setTimeout(async () => {
      if (this.#stopping || this.#terminated) return;
      const failures = await this.#launch(slot);
      for (const failure of failures) {
        this.log.error("worker {worker}: cannot bind {listener}: {error}", {
          worker: slot.index,
          listener: failure.key,
          error: failure.error,
        });
      }
      if (!slot.worker) return;
      if (this.#stopping || this.#terminated) {
        // Stopping began while it started: it never serves.
        slot.worker.terminate();
        slot.worker = undefined;
        slot.running = false;
        return;
      }
      // A reload while it started: it bound the rules of before.
      if (slot.rules !== this.#rules) await this.#giveRules(slot, this.#rules);
      slot.worker?.postMessage({ t: "serve" });
      if (slot.worker) this.log.info("worker {worker} started again", { worker: slot.index });
    }, delay);
  }
}
