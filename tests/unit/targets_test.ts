/**
 * Target choice, health, bandwidth and the PROXY header, without sockets.
 */
import { assert, assertEquals } from "../assert.ts";
import { hash, targetOrder } from "../../src/relay/balance.ts";
import { PASSIVE_FALL, TargetHealth } from "../../src/relay/health.ts";
import { Bandwidth } from "../../src/relay/bandwidth.ts";
import { localHeader, proxyHeader, V2_SIGNATURE } from "../../src/relay/proxy_protocol.ts";
import type { Target } from "../../src/rules/plan.ts";

const A = { host: "10.0.0.1", port: 80 };
const B = { host: "10.0.0.2", port: 80 };
const C = { host: "10.0.0.3", port: 80 };

function state(down: Target[] = [], sessions = new Map<Target, number>()) {
  let n = 0;
  return {
    usable: (t: Target) => !down.includes(t),
    sessions: (t: Target) => sessions.get(t) ?? 0,
    next: () => n++,
  };
}

Deno.test("failover: the list in order, targets that are down last", () => {
  assertEquals(targetOrder([A, B, C], "failover", state(), "x"), [A, B, C]);
  assertEquals(targetOrder([A, B, C], "failover", state([A]), "x"), [B, C, A]);
});

Deno.test("round-robin: each session starts one further", () => {
  const s = state();
  const firsts = Array.from({ length: 6 }, () => targetOrder([A, B, C], "round-robin", s, "x")[0]);
  assertEquals(firsts, [A, B, C, A, B, C]);
});

Deno.test("round-robin: a target that is down gives its turns to every other, not the next one", () => {
  const s = state([C]);
  const firsts = Array.from({ length: 6 }, () => targetOrder([A, B, C], "round-robin", s, "x")[0]);
  assertEquals(firsts, [A, B, A, B, A, B]);
  assertEquals(targetOrder([A, B, C], "round-robin", state([C]), "x"), [A, B, C]);
  // All down: still tried in turn rather than refused.
  const none = state([A, B, C]);
  assertEquals(targetOrder([A, B, C], "round-robin", none, "x")[0], A);
  assertEquals(targetOrder([A, B, C], "round-robin", none, "x")[0], B);
});

Deno.test("least-sessions: the target with the fewest live sessions first, ties in list order", () => {
  const sessions = new Map([[A, 3], [B, 1], [C, 1]]);
  assertEquals(targetOrder([A, B, C], "least-sessions", state([], sessions), "x"), [B, C, A]);
});

Deno.test("source-hash: one client address keeps its target; spread over many clients", () => {
  const s = state();
  const first = (client: string) => targetOrder([A, B, C], "source-hash", s, client)[0];
  assertEquals(first("198.51.100.7"), first("198.51.100.7"));
  const counts = new Map<Target, number>();
  for (let i = 0; i < 300; i++) {
    const t = first(`198.51.100.${i % 256}.${i}`);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  for (const t of [A, B, C]) assert((counts.get(t) ?? 0) > 50, `${t.host}: ${counts.get(t)}`);
  // Its target down: the next in line, and back when it is up.
  const mine = first("203.0.113.9");
  const without = targetOrder([A, B, C], "source-hash", state([mine]), "203.0.113.9");
  assert(without[0] !== mine && without.at(-1) === mine);
  assertEquals(hash("abc"), hash("abc"));
});

Deno.test("health: consecutive failures mark a target down, back-off doubles, a success brings it back", () => {
  const h = new TargetHealth();
  for (let i = 1; i < PASSIVE_FALL; i++) assert(!h.failed("refused", 0) && h.up);
  assert(h.failed("refused", 0), "the third failure marks it down");
  assert(!h.up && !h.usable(500) && h.usable(1_000), "rests one second");
  h.failed("refused", 1_000);
  assert(!h.usable(2_999) && h.usable(3_000), "then two");
  assert(h.succeeded(), "one success and it is up");
  assert(h.up && h.failures === 0);
});

Deno.test("health with rise and fall: active checks need several in a row", () => {
  const h = new TargetHealth();
  assert(!h.failed("timeout", 0, 2));
  assert(h.failed("timeout", 0, 2));
  assert(!h.succeeded(3) && !h.succeeded(3) && h.succeeded(3), "up on the third success");
});

Deno.test("bandwidth: a burst passes, then transfers wait their turn at the rate", async () => {
  let now = 0;
  const waits: number[] = [];
  const bw = new Bandwidth(1_000, () => now, (ms) => {
    waits.push(ms);
    now += ms;
    return Promise.resolve();
  });
  await bw.take(100); // Within the 0.1 s burst.
  assertEquals(waits, []);
  await bw.take(1_000); // One second's worth: waits for all but the burst.
  assertEquals(Math.round(waits[0]), 1_000);
  assertEquals(bw.slice, 50, "a slice is 50 ms of the rate");
  assert(bw.tryTake(500), "UDP: booked a burst ahead, a datagram may still borrow");
  assert(!bw.tryTake(1), "but not beyond: dropped");
  now += 2_000;
  assert(bw.tryTake(50), "after a pause, within the burst again");
});

Deno.test("bandwidth: slices scale down with the rate, to a single byte", () => {
  assertEquals(new Bandwidth(1).slice, 1);
  assertEquals(new Bandwidth(100).slice, 5);
  assertEquals(new Bandwidth(10 * 1024 * 1024).slice, 524_288);
});

Deno.test("bandwidth: a datagram larger than the burst passes on an idle budget and is paid off", () => {
  let now = 0;
  const bw = new Bandwidth(12_500, () => now); // 100 kbit/s: the burst is 1,250 bytes.
  // A tenth of the rate in 1,400-byte datagrams: every one passes.
  for (let i = 0; i < 5; i++) {
    assert(bw.tryTake(1_400), `datagram ${i}`);
    now += 1_120;
  }
  // 64 KiB on an idle budget: passes, and books 5.2 s of the rate.
  assert(bw.tryTake(65_507));
  assert(!bw.tryTake(100), "what follows is dropped while the debt exceeds the burst");
  now += 5_200;
  assert(bw.tryTake(100), "paid off (within the burst) again");
  // Over a long run the rate holds: offered twice the rate, about the rate passes.
  let passed = 0;
  for (let t = 0; t < 10_000; t += 40) {
    now += 40;
    if (bw.tryTake(1_000)) passed += 1_000;
  }
  assert(passed <= 12_500 * 10 + 1_250 + 1_000, `${passed} bytes in 10 s`);
  assert(passed >= 12_500 * 10 * 0.9, `${passed} bytes in 10 s`);
});

Deno.test("bandwidth: a wait ends when its session closes", async () => {
  const bw = new Bandwidth(1); // 1 B/s: one byte books a second.
  await bw.take(1);
  const closing = new AbortController();
  const started = performance.now();
  const waiting = bw.take(1_000, closing.signal); // Would wait about 1,000 s.
  closing.abort();
  await waiting;
  assert(performance.now() - started < 1_000);
  await bw.take(1, closing.signal); // Already aborted: no wait at all.
});

Deno.test("PROXY v1: TCP4 and TCP6 lines; mapped addresses are IPv4", () => {
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  assertEquals(
    text(proxyHeader("v1", {
      clientAddress: "::ffff:198.51.100.7",
      clientPort: 51234,
      listenAddress: "203.0.113.10",
      listenPort: 80,
    })),
    "PROXY TCP4 198.51.100.7 203.0.113.10 51234 80\r\n",
  );
  assertEquals(
    text(proxyHeader("v1", {
      clientAddress: "2001:db8::7",
      clientPort: 1,
      listenAddress: "2001:db8::10",
      listenPort: 443,
    })),
    "PROXY TCP6 2001:db8::7 2001:db8::10 1 443\r\n",
  );
});

Deno.test("PROXY, a connection relaying no client (a probe): v1 UNKNOWN, v2 LOCAL without addresses", () => {
  assertEquals(new TextDecoder().decode(localHeader("v1")), "PROXY UNKNOWN\r\n");
  const v2 = localHeader("v2");
  assertEquals(v2.length, 16);
  assertEquals([...v2.subarray(0, 12)], [...V2_SIGNATURE]);
  assertEquals([v2[12], v2[13], v2[14], v2[15]], [0x20, 0x00, 0, 0]);
});

Deno.test("PROXY v2: signature, version and command, family, length, addresses and ports", () => {
  const v4 = proxyHeader("v2", {
    clientAddress: "198.51.100.7",
    clientPort: 0xc822,
    listenAddress: "203.0.113.10",
    listenPort: 80,
  });
  assertEquals([...v4.subarray(0, 12)], [...V2_SIGNATURE]);
  assertEquals([...v4.subarray(12)], [
    0x21,
    0x11,
    0,
    12,
    198,
    51,
    100,
    7,
    203,
    0,
    113,
    10,
    0xc8,
    0x22,
    0,
    80,
  ]);
  const v6 = proxyHeader("v2", {
    clientAddress: "2001:db8::7",
    clientPort: 1,
    listenAddress: "::1",
    listenPort: 443,
  });
  assertEquals([...v6.subarray(12, 16)], [0x21, 0x21, 0, 36]);
  assertEquals(v6.length, 16 + 36);
  assertEquals([...v6.subarray(16, 18)], [0x20, 0x01]);
  assertEquals([...v6.subarray(16 + 32)], [0, 1, 1, 187]);
});
