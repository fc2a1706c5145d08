import { assertEquals } from "../assert.ts";
import { formatDuration, parseDuration } from "../../src/config/duration.ts";

Deno.test("parseDuration accepts every documented form", () => {
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("10s"), 10_000);
  assertEquals(parseDuration("5m"), 300_000);
  assertEquals(parseDuration("1h"), 3_600_000);
  assertEquals(parseDuration("1.5s"), 1_500);
  assertEquals(parseDuration(30), 30_000);
  assertEquals(parseDuration(0.25), 250);
  assertEquals(parseDuration("0s"), 0);
  assertEquals(parseDuration("7"), 7_000);
});

Deno.test("parseDuration rejects what is not a duration, saying what is expected", () => {
  for (const bad of ["", "10x", "-1s", "s", "1 hour", "1e3s", "1d"]) {
    const result = parseDuration(bad);
    assertEquals(typeof result, "object", bad);
    assertEquals((result as { error: string }).error.includes("expected a duration"), true, bad);
  }
  for (const bad of [-1, Infinity, NaN, true, [], {}]) {
    assertEquals(typeof parseDuration(bad), "object", String(bad));
  }
  assertEquals(typeof parseDuration("99999h"), "object");
});

Deno.test("formatDuration reads naturally", () => {
  assertEquals(formatDuration(250), "250ms");
  assertEquals(formatDuration(1_500), "1.5s");
  assertEquals(formatDuration(120_000), "2m");
  assertEquals(formatDuration(5_400_000), "1.5h");
});
