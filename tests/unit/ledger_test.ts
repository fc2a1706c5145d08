/**
 * The client ledger, with the clock passed in: who used a rule, when, how
 * much, through which address; bounded, the least recently seen evicted.
 */
import { assertEquals } from "../assert.ts";
import { ClientLedger } from "../../src/status/ledger.ts";

const T0 = Date.UTC(2026, 11, 6, 12, 0, 0);
const MIN = 60_000;

Deno.test("ledger: first and last seen, sessions, refusals, bytes and the address reached", () => {
  const ledger = new ClientLedger(10);
  const a = ledger.started("198.51.100.7", "203.0.113.10:80", T0);
  a.bytesUp += 100;
  a.bytesDown += 2_000;
  ledger.ended(a, T0 + 5 * MIN);
  const b = ledger.started("198.51.100.7", "203.0.113.20:80", T0 + 60 * MIN);
  ledger.refused("198.51.100.7", "203.0.113.20:80", T0 + 61 * MIN);
  assertEquals(ledger.list(), [{
    address: "198.51.100.7",
    via: "203.0.113.20:80",
    firstSeen: T0,
    lastSeen: T0 + 61 * MIN,
    sessions: 2,
    refused: 1,
    bytesUp: 100,
    bytesDown: 2_000,
    active: 1,
  }]);
  // A session reported late (a worker's) does not move the times backwards.
  ledger.started("198.51.100.7", "203.0.113.20:80", T0 + 30 * MIN);
  assertEquals(ledger.list()[0].lastSeen, T0 + 61 * MIN);
  ledger.ended(b, T0 + 90 * MIN);
  assertEquals(ledger.list()[0].lastSeen, T0 + 90 * MIN);
  assertEquals(ledger.list()[0].active, 1);
});

Deno.test("ledger: a long session counts as seen until it ends, and live ones are listed as recent", () => {
  const ledger = new ClientLedger(10);
  const held = ledger.started("198.51.100.1", "203.0.113.10:22", T0);
  ledger.started("198.51.100.2", "203.0.113.10:22", T0 + MIN);
  // Three days on: .1 has a session open since T0, .2 was last seen at T0 + 1 min.
  const now = T0 + 3 * 24 * 60 * MIN;
  assertEquals(ledger.list(now - 60 * MIN).map((e) => e.address), ["198.51.100.2", "198.51.100.1"]);
  assertEquals(ledger.countWithin(60 * MIN, now), 2);
  ledger.ended(held, now);
  assertEquals(ledger.list(now - 60 * MIN).map((e) => e.address), ["198.51.100.1", "198.51.100.2"]);
});

Deno.test("ledger: bounded; the least recently seen are evicted and counted", () => {
  const ledger = new ClientLedger(3);
  const first = ledger.started("198.51.100.1", "x", T0);
  ledger.ended(first, T0);
  for (let i = 2; i <= 4; i++) ledger.refused(`198.51.100.${i}`, "x", T0 + i * MIN);
  assertEquals(ledger.size, 3);
  assertEquals(ledger.evicted, 1);
  assertEquals(ledger.list().map((e) => e.address), [
    "198.51.100.4",
    "198.51.100.3",
    "198.51.100.2",
  ]);
  // Touching .2 keeps it; .3 is now the least recently seen.
  ledger.refused("198.51.100.2", "x", T0 + 10 * MIN);
  ledger.refused("198.51.100.5", "x", T0 + 11 * MIN);
  assertEquals(ledger.list().map((e) => e.address), [
    "198.51.100.5",
    "198.51.100.2",
    "198.51.100.4",
  ]);
  assertEquals(ledger.evicted, 2);
  // Smaller at a reload: down to it at once.
  ledger.resize(1);
  assertEquals(ledger.list().map((e) => e.address), ["198.51.100.5"]);
  assertEquals(ledger.evicted, 4);
  // A flood of distinct clients keeps the size at the capacity.
  for (let i = 0; i < 10_000; i++) ledger.refused(`10.0.${i >> 8}.${i & 255}`, "x", T0 + 20 * MIN);
  assertEquals(ledger.size, 1);
});

Deno.test("ledger: a client with a live session is never evicted; it counts as seen now", () => {
  const ledger = new ClientLedger(2);
  const held = ledger.started("198.51.100.1", "x", T0);
  ledger.started("198.51.100.2", "x", T0 + MIN);
  // Three clients, two of them in session: the one whose session ended goes, though newer.
  ledger.ended(ledger.started("198.51.100.3", "x", T0 + 2 * MIN), T0 + 2 * MIN);
  assertEquals(ledger.list().map((e) => e.address), ["198.51.100.2", "198.51.100.1"]);
  assertEquals(ledger.evicted, 1);
  ledger.ended(held, T0 + 3 * MIN);
  ledger.started("198.51.100.4", "x", T0 + 4 * MIN);
  // .1's session ended: it goes before .2, whose session goes on (seen now).
  assertEquals(ledger.list().map((e) => [e.address, e.active]), [
    ["198.51.100.4", 1],
    ["198.51.100.2", 1],
  ]);
  assertEquals(ledger.evicted, 2);
  // Every client in session and one more: the ledger holds them all rather than forget one.
  for (let i = 5; i <= 9; i++) ledger.started(`198.51.100.${i}`, "x", T0 + i * MIN);
  assertEquals(ledger.size, 7);
});

Deno.test("ledger: entries restored after a restart keep their order and the capacity", () => {
  const ledger = new ClientLedger(2);
  const entry = (address: string, lastSeen: number) => ({
    address,
    via: "x",
    firstSeen: T0,
    lastSeen,
    sessions: 1,
    refused: 0,
    bytesUp: 0,
    bytesDown: 0,
    active: 3,
  });
  ledger.restore([
    entry("198.51.100.2", T0 + 2),
    entry("198.51.100.1", T0 + 1),
    entry("198.51.100.3", T0 + 3),
  ], 5);
  assertEquals(ledger.list().map((e) => [e.address, e.active]), [["198.51.100.3", 0], [
    "198.51.100.2",
    0,
  ]]);
  assertEquals(ledger.evicted, 6);
});

Deno.test("ledger: more clients in session than it keeps: all held while live, then the oldest go", () => {
  const ledger = new ClientLedger(1_000);
  const live = Array.from(
    { length: 4_000 },
    (_, i) => ledger.started(`10.0.${i >> 8}.${i & 255}`, "x", T0 + i),
  );
  assertEquals([ledger.size, ledger.evicted], [4_000, 0]);
  // A refused client beyond the capacity goes at once: only it is not in session.
  ledger.refused("198.51.100.1", "x", T0 + 5_000);
  assertEquals([ledger.size, ledger.evicted], [4_000, 1]);
  live.forEach((entry, i) => ledger.ended(entry, T0 + 10_000 + i));
  assertEquals([ledger.size, ledger.evicted], [1_000, 3_001]);
  // The last 1,000 to end are the ones kept.
  assertEquals(ledger.list().at(-1)!.address, `10.0.${3_000 >> 8}.${3_000 & 255}`);
});
