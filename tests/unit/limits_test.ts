import { assert, assertEquals } from "../assert.ts";
import { type Admission, RuleLimiter } from "../../src/relay/limits.ts";

function admitted(result: Admission | { refused: string }): Admission {
  assert(!("refused" in result), `refused: ${JSON.stringify(result)}`);
  return result;
}

Deno.test("max_sessions counts live sessions and frees slots on release", () => {
  const limiter = new RuleLimiter({ maxSessions: 2, maxSessionsPerClient: 0, throttle: null });
  const a = admitted(limiter.admit("10.0.0.1", 0));
  admitted(limiter.admit("10.0.0.2", 0));
  assertEquals(limiter.admit("10.0.0.3", 0), { refused: "max_sessions" });
  a.release();
  a.release(); // twice is harmless
  assertEquals(limiter.active, 1);
  admitted(limiter.admit("10.0.0.3", 0));
});

Deno.test("max_sessions_per_client is per client address", () => {
  const limiter = new RuleLimiter({ maxSessions: 0, maxSessionsPerClient: 1, throttle: null });
  const a = admitted(limiter.admit("10.0.0.1", 0));
  assertEquals(limiter.admit("10.0.0.1", 0), { refused: "max_sessions_per_client" });
  admitted(limiter.admit("10.0.0.2", 0));
  a.release();
  admitted(limiter.admit("10.0.0.1", 0));
});

Deno.test("throttle allows COUNT starts per sliding interval", () => {
  const limiter = new RuleLimiter({
    maxSessions: 0,
    maxSessionsPerClient: 0,
    throttle: { count: 3, intervalMs: 1_000, text: "3/1s" },
  });
  for (const t of [0, 100, 200]) admitted(limiter.admit("c", t));
  assertEquals(limiter.admit("c", 999), { refused: "throttle" });
  admitted(limiter.admit("c", 1_000)); // the start at 0 has left the window
  assertEquals(limiter.admit("c", 1_050), { refused: "throttle" });
  admitted(limiter.admit("c", 1_150));
});

Deno.test("a refused session takes no slot", () => {
  const limiter = new RuleLimiter({ maxSessions: 1, maxSessionsPerClient: 0, throttle: null });
  admitted(limiter.admit("a", 0));
  for (let i = 0; i < 5; i++) assertEquals(limiter.admit("b", 0), { refused: "max_sessions" });
  assertEquals(limiter.active, 1);
});

Deno.test("hold: a session let in without asking counts against limits set later", () => {
  const limiter = new RuleLimiter({ maxSessions: 0, maxSessionsPerClient: 0, throttle: null });
  const held = [limiter.hold("a", 0), limiter.hold("a", 0)];
  limiter.limits = { maxSessions: 3, maxSessionsPerClient: 2, throttle: null };
  assertEquals(limiter.admit("a", 0), { refused: "max_sessions_per_client" });
  const third = limiter.admit("b", 0);
  assert("release" in third);
  assertEquals(limiter.admit("c", 0), { refused: "max_sessions" });
  held[0].release();
  held[0].release(); // Once only.
  assertEquals(limiter.active, 2);
});
