/**
 * The relay's small parts, without sockets: deciding a session, "once per
 * interval", the buffer pool, the serve loop's back-off, the UDP flow table.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { decide } from "../../src/relay/admission.ts";
import { BufferPool, MemoryBudget } from "../../src/relay/buffer_pool.ts";
import { RuleLimiter } from "../../src/relay/limits.ts";
import { EventGate } from "../../src/log/rate_limit.ts";
import { MAX_BACKOFF_MS, serveLoop } from "../../src/relay/serve_loop.ts";
import { FlowTable } from "../../src/relay/udp/flows.ts";
import { parseClientAddress } from "../../src/config/network.ts";
import type { Rule } from "../../src/config/types.ts";
import { buildPlan } from "../../src/rules/plan.ts";
import { loadRules } from "../fixtures/rules.ts";

const RULES = loadRules(`
[[rule]]
name = "lab"
action = "block"
listen = "127.0.0.1:80"
from = "10.1.0.0/16"

[[rule]]
name = "office"
listen = "127.0.0.1:80"
from = "10.0.0.0/8"
bounce_to = "127.0.0.1:8080"
max_sessions = 1
`);
const [LISTENER] = buildPlan(RULES, new Map()).listeners;

function limiters() {
  const made = new Map<Rule, RuleLimiter>();
  return (rule: Rule) => {
    if (!made.has(rule)) made.set(rule, new RuleLimiter(rule));
    return made.get(rule)!;
  };
}

Deno.test("decide: first match, block rules, deny by default, then limits", () => {
  const limiterOf = limiters();
  const ip = (text: string) => parseClientAddress(text);
  const blocked = decide(LISTENER, ip("10.1.2.3"), limiterOf, 0);
  assertEquals(blocked.pass ? null : [blocked.rule?.name, blocked.reason], ["lab", "rule"]);
  const none = decide(LISTENER, ip("192.168.1.1"), limiterOf, 0);
  assertEquals(none.pass ? null : [none.rule, none.reason], [null, "no-matching-rule"]);
  const unparsable = decide(LISTENER, null, limiterOf, 0);
  assertEquals(unparsable.pass ? null : unparsable.reason, "no-matching-rule");
  const passed = decide(LISTENER, ip("10.2.0.1"), limiterOf, 0);
  assert(passed.pass);
  assertEquals(passed.targets, [{ host: "127.0.0.1", port: 8080 }]);
  const full = decide(LISTENER, ip("10.2.0.2"), limiterOf, 0);
  assertEquals(full.pass ? null : [full.rule?.name, full.reason], ["office", "max_sessions"]);
  passed.admission.release();
  assert(decide(LISTENER, ip("10.2.0.2"), limiterOf, 0).pass, "the slot is free again");
});

Deno.test("EventGate: a burst per key per window passes; the rest is counted and reported once", () => {
  const gate = new EventGate(1_000, 2, 3);
  assert(gate.pass("a", "events a", 0));
  assert(gate.pass("a", "events a", 10));
  assert(!gate.pass("a", "events a", 20));
  assert(!gate.pass("a", "events a", 30));
  assert(gate.pass("b", "events b", 30));
  assertEquals(gate.expire(500), [], "nothing ends before its window");
  assertEquals(gate.expire(1_000), [{ what: "events a", count: 2 }]);
  assertEquals(gate.expire(1_100), [], "reported once; b had nothing suppressed");
  assert(gate.pass("a", "events a", 1_100), "a new window for a");
});

Deno.test("EventGate: beyond maxKeys, new keys share one overflow window", () => {
  const gate = new EventGate(1_000, 1, 2);
  assert(gate.pass("a", "a", 0));
  assert(gate.pass("b", "b", 0));
  assert(gate.pass("c", "c", 0), "the first new key opens the overflow window");
  assert(!gate.pass("d", "d", 0));
  assert(!gate.pass("e", "e", 0));
  const [overflow] = gate.expire(1_000);
  assertEquals(overflow.count, 2);
  assertMatch(overflow.what, /too many to tell apart/);
});

Deno.test("BufferPool: reuses what is given back, within a memory budget", () => {
  const budget = new MemoryBudget(32);
  const pool = new BufferPool(16, 1, budget);
  const a = pool.tryTake()!;
  const b = pool.tryTake()!;
  assertEquals(pool.tryTake(), null, "the budget holds two");
  assertEquals([budget.inUse, budget.refused], [32, 1]);
  pool.give(a);
  pool.give(b); // Beyond maxFree: left to the garbage collector.
  assertEquals(budget.inUse, 0);
  assert(pool.tryTake() === a, "the kept buffer comes back");
  assertEquals(new BufferPool(8, 0).take().length, 8, "without a budget, always a buffer");
});

Deno.test("BufferPool that shrinks: free buffers hold no memory; at most maxFree resizable ones are made", () => {
  const budget = new MemoryBudget(64);
  const pool = new BufferPool(16, 2, budget, true);
  const [a, b, c] = [pool.tryTake()!, pool.tryTake()!, pool.tryTake()!];
  const resizable = (buffer: Uint8Array) => (buffer.buffer as ArrayBuffer).resizable;
  assertEquals([a.length, b.length, c.length], [16, 16, 16]);
  assert(resizable(a) && resizable(b), "the first two are resizable");
  assert(!resizable(c), "beyond maxFree, an ordinary buffer");
  a.fill(7);
  pool.give(a);
  assertEquals([a.length, a.buffer.byteLength], [0, 0], "given back: its memory with it");
  pool.give(c); // Ordinary: left to the garbage collector, not kept.
  assertEquals(budget.inUse, 16);
  const again = pool.tryTake()!;
  assert(again === a, "the kept buffer comes back, full size");
  assertEquals(again.length, 16);
  assert(!resizable(pool.tryTake()!), "still no more than two resizable ones");
});

Deno.test("serveLoop: hands items on, reports a failing burst once, then recovery", async () => {
  const script: (number | Error)[] = [1, new Error("EMFILE"), new Error("EMFILE"), 2, 3];
  const handled: number[] = [];
  const failing: string[] = [];
  const recovered: number[] = [];
  await serveLoop(
    () => {
      const next = script.shift()!;
      return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
    },
    (item) => void handled.push(item),
    {
      closed: () => script.length === 0,
      failing: (error) => failing.push((error as Error).message),
      recovered: (n) => recovered.push(n),
    },
  );
  assertEquals(handled, [1, 2, 3]);
  assertEquals(failing, ["EMFILE"]);
  assertEquals(recovered, [2]);
});

Deno.test("FlowTable: keys by address and port, tells a draining listener when it is empty", () => {
  const flows = new FlowTable<string>();
  const a = FlowTable.keyOf({ transport: "udp", hostname: "127.0.0.1", port: 5000 });
  const b = FlowTable.keyOf({ transport: "udp", hostname: "127.0.0.1", port: 5001 });
  flows.add(a, "first");
  flows.add(b, "second");
  let empty = 0;
  flows.onEmpty(() => empty++);
  flows.delete(a);
  assertEquals([flows.get(b), empty], ["second", 0]);
  flows.delete(b);
  assertEquals(empty, 1);
  flows.onEmpty(() => empty++);
  assertEquals(empty, 2, "called at once when already empty");
  flows.add(a, "again");
  flows.onEmpty(() => empty++);
  flows.cancelOnEmpty();
  flows.delete(a);
  assertEquals(empty, 2, "a revived listener is not closed");
});

Deno.test("serveLoop skips a single connection's failure at once and backs off only when short of resources", async () => {
  const notConnected = Object.assign(new Deno.errors.NotConnected("reset before accept"), {
    code: "ENOTCONN",
  });
  const tooMany = Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });
  const script: (Error | number)[] = [
    ...Array(50).fill(notConnected),
    1,
    ...Array(8).fill(tooMany),
    2,
  ];
  const handled: number[] = [];
  const failing: unknown[] = [];
  const recovered: number[] = [];
  const waits: number[] = [];
  await serveLoop(
    () => {
      const step = script.shift()!;
      return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
    },
    (item) => void handled.push(item),
    {
      closed: () => handled.length === 2,
      failing: (error) => failing.push(error),
      recovered: (failures) => recovered.push(failures),
      wait: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    },
  );
  assertEquals(handled, [1, 2]);
  assertEquals(failing, [tooMany], "resets are not reported as the listener failing");
  assertEquals(recovered, [8]);
  // 50 resets cost no waiting; 8 resource failures wait 10, 20, 40, 80, then the cap.
  assertEquals(waits, [10, 20, 40, 80, 100, 100, 100, 100]);
  assertEquals(MAX_BACKOFF_MS, 100);
});
