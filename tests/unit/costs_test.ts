/** What a plan's listeners cost before any session, and the warnings at the usual limits. */
import { assertEquals, assertMatch } from "../assert.ts";
import {
  BASE_DESCRIPTORS,
  costWarnings,
  isolatesAsked,
  listenerCosts,
  RUNTIME_BYTES,
} from "../../src/rules/costs.ts";
import { buildPlan } from "../../src/rules/plan.ts";
import { loadRules } from "../fixtures/rules.ts";

function plan(listen: string, protocol: string) {
  const config = loadRules(
    `[[rule]]\nname = "r"\nprotocol = ${protocol}\nlisten = "${listen}"\nbounce_to = "127.0.0.2"\n`,
  );
  return buildPlan(config, new Map()).listeners;
}

Deno.test("costs: one listener per port and protocol, descriptors and memory before any session", () => {
  const costs = listenerCosts(plan("127.0.0.1:8000-8999", '["tcp", "udp"]'), true);
  assertEquals([costs.tcp, costs.udp], [1_000, 1_000]);
  assertEquals(costs.descriptors, BASE_DESCRIPTORS + 2_000 + 1);
  assertEquals(costs.memoryBytes, RUNTIME_BYTES + 1_000 * 8 * 1024 + 1_000 * 63 * 1024);
});

Deno.test("costs: warnings past the usual default limit (1,024) and the unit's (65,536)", () => {
  assertEquals(costWarnings(listenerCosts(plan("127.0.0.1:8000-8099", '"tcp"'))), []);
  const [usual] = costWarnings(listenerCosts(plan("127.0.0.1:8000-9999", '"tcp"')));
  assertMatch(usual, /2025 open files, more than the usual default limit of 1024/);
  const [unit] = costWarnings(listenerCosts(plan("127.0.0.1:1-65535", '["tcp", "udp"]')));
  assertMatch(unit, /131095 open files, more than 65536 \(the systemd unit's LimitNOFILE\)/);
});

Deno.test("costs: every isolate binds its own socket for each TCP listener (one process)", () => {
  const listeners = plan("127.0.0.1:8000-8999", '["tcp", "udp"]');
  assertEquals(listenerCosts(listeners, false, 4).descriptors, BASE_DESCRIPTORS + 4_000 + 1_000);
  assertEquals(isolatesAsked("auto", 8), 8);
  assertEquals(isolatesAsked(3, 8), 3);
});
