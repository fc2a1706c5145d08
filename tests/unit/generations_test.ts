/**
 * What a reload makes of a live session (pure), and the listener set every
 * isolate keeps, driven by listeners that bind nothing: all or none, port-0
 * pairs, a listener deferred until a removed one lets go of its port, and
 * one that waits for a running instance.
 */
import fc from "fast-check";
import { assert, assertEquals } from "../assert.ts";
import { RuleGenerations, sessionFate, type SessionPlace } from "../../src/server/generations.ts";
import { type BindRefusal, ListenerSet, type OpenMoment } from "../../src/server/listener_set.ts";
import type { RelayListener } from "../../src/relay/host.ts";
import { buildPlan, type ListenerPlan } from "../../src/rules/plan.ts";
import { loadRules, passRule } from "../fixtures/rules.ts";

/** The one listener of a rule file with `rules` on 127.0.0.1:8080 (first match, file order). */
function listenerOf(rules: string): ListenerPlan {
  return plansOf(rules)[0];
}

const web = passRule({ name: "web", listen: "127.0.0.1:8080", target: 80 });
const lab = (action: "pass" | "block") =>
  `[[rule]]\nname = "lab"\naction = "${action}"\nfrom = "10.0.0.0/8"\nlisten = "127.0.0.1:8080"\n${
    action === "pass" ? 'bounce_to = "127.0.0.1:81"\n' : ""
  }`;
/** A session of rule `web` from `clientIp` on 127.0.0.1:8080. */
const sessionFrom = (clientIp: string): SessionPlace => ({
  setup: { listenerKey: "tcp 127.0.0.1:8080", clientIp },
  rule: { name: "web" },
});
const session = sessionFrom("10.1.2.3");

Deno.test("sessionFate: its listener or rule gone drains it; refused by the new rules revokes it", () => {
  const listener = listenerOf(web);
  const names = new Set(["web"]);
  assertEquals(sessionFate(session, names, listener, true), "stays");
  assertEquals(sessionFate(session, names, undefined, true), "drains");
  assertEquals(sessionFate(session, new Set(["other"]), listener, true), "drains");
  // A block for the client's network now comes first.
  const blocked = listenerOf(lab("block") + web);
  assertEquals(sessionFate(session, names, blocked, true), "revoked");
  assertEquals(sessionFate(session, names, blocked, false), "stays", "not enforced: it goes on");
  assertEquals(
    sessionFate(sessionFrom("198.51.100.9"), names, blocked, true),
    "stays",
  );
  // A client that is not an address (never so in practice) is not let in by chance.
  assertEquals(sessionFate(sessionFrom("nonsense"), names, blocked, true), "revoked");
});

Deno.test("sessionFate agrees with first match for any client and rule order", () => {
  const listener = listenerOf(lab("block") + web);
  fc.assert(
    fc.property(fc.ipV4(), (ip) => {
      const fate = sessionFate(sessionFrom(ip), new Set(["web"]), listener, true);
      return fate === (ip.startsWith("10.") ? "revoked" : "stays");
    }),
    { seed: 25, numRuns: 300 },
  );
});

Deno.test("RuleGenerations: a late session meets the last reload, counted once in its summary", () => {
  const generations = new RuleGenerations(loadRules(web).rules);
  const listener = listenerOf(web);
  assertEquals(
    generations.opened(session, undefined, 0),
    "stays",
    "no reload yet: nothing to meet",
  );
  generations.advance(loadRules(lab("block") + web).rules, { drainMs: 0, enforce: true });
  const blocked = listenerOf(lab("block") + web);
  // Decided under the rules before: revoked now. Decided under these: it stays.
  assertEquals(generations.opened(session, blocked, 0), "revoked");
  assertEquals(generations.opened(session, blocked, 1), "stays");
  // One of this isolate's own accepts (no generation): only a listener or rule gone counts.
  assertEquals(generations.opened(session, blocked), "stays");
  assertEquals(generations.opened(session, undefined), "drains");
  assertEquals(generations.takeLate(), { draining: 1, revoked: 1 });
  assertEquals(generations.takeLate(), { draining: 0, revoked: 0 }, "taken once");
  // The rule of a late report is found in the rules before the reload too.
  generations.advance(loadRules(lab("pass")).rules, { drainMs: 0, enforce: true });
  assertEquals(generations.ruleNamed("web")?.name, "web");
  assertEquals(generations.ruleNamed("gone"), null);
  assertEquals(generations.generation, 2);
  assert(listener.bindings.length === 1);
});

/** A listener that binds nothing: a port of its own, closed a turn after it stops. */
class FakeListener implements RelayListener {
  readonly protocol;
  readonly address: Deno.NetAddr;
  serving = false;
  stopped = false;
  readonly #closed = Promise.withResolvers<void>();
  constructor(public plan: ListenerPlan, port: number) {
    this.protocol = plan.protocol;
    this.address = { transport: plan.protocol, hostname: plan.address, port };
  }
  get closed(): Promise<void> {
    return this.#closed.promise;
  }
  serve(): void {
    this.serving = true;
  }
  replacePlan(plan: ListenerPlan): void {
    this.plan = plan;
  }
  stopAccepting(): void {
    this.stopped = true;
    setTimeout(() => this.#closed.resolve(), 1);
  }
}

/** Ports "held" by fake listeners and by others; opens fail as the kernel would. */
class FakePorts {
  readonly held = new Map<string, FakeListener>();
  readonly others = new Set<string>();
  readonly opened: { key: string; moment: OpenMoment }[] = [];
  #next = 40_000;
  refuse = new Set<string>();

  open = (plan: ListenerPlan, moment: OpenMoment, port = plan.port): FakeListener | BindRefusal => {
    this.opened.push({ key: plan.key, moment });
    if (this.refuse.has(plan.key)) return { error: "refused for the test", addrInUse: false };
    const chosen = port === 0 ? this.#next++ : port;
    const where = `${plan.protocol} ${chosen}`;
    const holder = this.held.get(where);
    if (this.others.has(where) || (holder && !holder.stopped)) {
      return { error: "address already in use", addrInUse: true };
    }
    const listener = new FakeListener(plan, chosen);
    this.held.set(where, listener);
    listener.closed.then(() => {
      if (this.held.get(where) === listener) this.held.delete(where);
    });
    return listener;
  };
}

function plansOf(rules: string): ListenerPlan[] {
  const { listeners, problems } = buildPlan(loadRules(rules), new Map());
  assertEquals(problems, []);
  return listeners;
}

Deno.test("ListenerSet: all or none at start; a failure leaves nothing open", () => {
  const ports = new FakePorts();
  const set = new ListenerSet(ports.open);
  const plans = plansOf(
    passRule({ name: "a", listen: "127.0.0.1:7001", target: 80 }) +
      passRule({ name: "b", listen: "127.0.0.1:7002", target: 80 }),
  );
  ports.refuse.add(plans[1].key);
  assertEquals(set.bindAll(plans), [{ key: plans[1].key, error: "refused for the test" }]);
  assertEquals(set.size, 0);
  assert([...ports.held.values()].every((l) => l.stopped), "the one bound is closed again");
});

Deno.test("ListenerSet: TCP and UDP of one rule on port 0 share the port the system picks", () => {
  const ports = new FakePorts();
  ports.others.add("udp 40000"); // The first pick is taken for UDP: the pair moves on.
  const set = new ListenerSet(ports.open);
  const plans = plansOf(passRule({ listen: "127.0.0.1:0", target: 80, protocol: "both" }));
  assertEquals(set.bindAll(plans), []);
  const bound = [...set.values()].map((l) => `${l.protocol} ${l.address.port}`).sort();
  assertEquals(bound, ["tcp 40001", "udp 40001"]);
});

Deno.test("ListenerSet: a reload keeps, removes and adds; one whose port a removed listener holds binds once it let go", async () => {
  const ports = new FakePorts();
  const set = new ListenerSet(ports.open);
  const before = plansOf(
    passRule({ name: "kept", listen: "127.0.0.1:7001", target: 80 }) +
      passRule({ name: "moves", listen: "127.0.0.1:7002", target: 80 }),
  );
  assertEquals(set.bindAll(before), []);
  set.serve();
  const kept = set.get(before[0].key) as FakeListener;
  // The same port on every address: it needs the removed listener's port.
  const after = plansOf(
    passRule({ name: "kept", listen: "127.0.0.1:7001", target: 81 }) +
      passRule({ name: "moves", listen: "*:7002", target: 80 }),
  );
  const changes = await set.apply(after);
  assertEquals(changes.kept.map((p) => p.key), [before[0].key]);
  assertEquals(changes.removed, [before[1].key]);
  assertEquals(changes.added, [after[1].key]);
  assertEquals(changes.failed, []);
  assertEquals(kept.plan, after[0], "the kept listener takes the new plan");
  assertEquals(
    ports.opened.filter((o) => o.key === after[1].key).map((o) => o.moment),
    ["first", "retry"],
  );
  assert((set.get(after[1].key) as FakeListener).serving, "bound after serve(): it serves");
  assertEquals([...set.tcpPorts()].sort(), [7001, 7002]);
});

Deno.test("ListenerSet: a listener a running instance holds waits, then binds once it let go", async () => {
  const ports = new FakePorts();
  ports.others.add("tcp 7003");
  const set = new ListenerSet(ports.open);
  const plans = plansOf(passRule({ listen: "127.0.0.1:7003", target: 80 }));
  assertEquals(set.bindAll(plans, () => true), [], "held elsewhere: not a failure");
  assertEquals(set.size, 0);
  assertEquals(ports.opened.map((o) => o.moment), ["beside"]);
  ports.others.delete("tcp 7003");
  let now = 0;
  assertEquals(await set.bindWaiting(2_000, () => now++), []);
  assertEquals(set.size, 1);
  // Still held after the patience: said, with how long it waited.
  const stubborn = new ListenerSet(ports.open);
  ports.others.add("tcp 7004");
  stubborn.bindAll(plansOf(passRule({ listen: "127.0.0.1:7004", target: 80 })), () => true);
  let clock = 0;
  const failures = await stubborn.bindWaiting(50, () => (clock += 20));
  assertEquals(failures.length, 1);
  assert(/still, 50ms after the running instance let go of it/.test(failures[0].error));
});
