/**
 * Log output without a process around it: the line writer's bounds and
 * failure counts, syslog framing, control characters in text lines.
 */
import { assertEquals, assertMatch } from "../assert.ts";
import type { LogRecord } from "@logtape/logtape";
import { LineWriter } from "../../src/log/writer.ts";
import { syslogLine } from "../../src/log/syslog.ts";
import { escapeControls, textFormatter } from "../../src/log/events.ts";

function record(level: LogRecord["level"], message: string): LogRecord {
  return {
    category: ["portbounce"],
    level,
    message: [message],
    rawMessage: message,
    timestamp: new Date(2026, 10, 8, 9, 5, 7).getTime(),
    properties: {},
  };
}

Deno.test("LineWriter: batches lines, counts failed writes, never throws", async () => {
  const written: string[] = [];
  let failing = false;
  const writer = new LineWriter("test", {
    write(bytes) {
      if (failing) return Promise.reject(new Error("Broken pipe (os error 32)"));
      written.push(new TextDecoder().decode(bytes));
      return Promise.resolve(bytes.length);
    },
  });
  writer.push("a\n");
  writer.push("b\n");
  await writer.flush();
  assertEquals(written.join(""), "a\nb\n");
  failing = true;
  writer.push("c\n");
  writer.push("d\n");
  await writer.flush();
  assertEquals([writer.failed, writer.lastError], [2, "Broken pipe"]);
});

Deno.test("LineWriter: a reader that cannot keep up costs counted lines, not memory", async () => {
  let release!: () => void;
  const blocked = new Promise<void>((resolve) => release = resolve);
  const writer = new LineWriter(
    "slow",
    {
      async write(bytes) {
        await blocked;
        return bytes.length;
      },
    },
    false,
    100,
  );
  for (let i = 0; i < 100; i++) writer.push("0123456789\n");
  // One line is being written, nine (99 characters) wait, the rest is dropped.
  assertEquals(writer.dropped, 90);
  release();
  await writer.flush();
});

Deno.test("LineWriter: datagram mode writes each line on its own", async () => {
  const datagrams: string[] = [];
  const writer = new LineWriter("syslog", {
    write(bytes) {
      datagrams.push(new TextDecoder().decode(bytes));
      return Promise.resolve(bytes.length);
    },
  }, true);
  writer.push("<30>one");
  writer.push("<30>two");
  await writer.flush();
  assertEquals(datagrams, ["<30>one", "<30>two"]);
});

Deno.test("syslog lines: PRI from facility and level, local time stamp, tag with pid", () => {
  assertEquals(
    syslogLine(record("warning", "x"), "target refused\n", "daemon", 42),
    "<28>Nov  8 09:05:07 portbounce[42]: target refused",
  );
  assertMatch(syslogLine(record("error", "x"), "e", "local7", 1), /^<187>/);
  assertMatch(syslogLine(record("debug", "x"), "d", "kern", 1), /^<7>/);
  assertEquals(syslogLine(record("info", "x"), "a".repeat(9_000), "user", 1).length < 8_100, true);
});

Deno.test("text lines escape control characters: a value cannot start a line of its own", () => {
  assertEquals(escapeControls("a\nb\r\u0007c\u2028"), "a\\u000ab\\u000d\\u0007c\\u2028");
  const line = textFormatter(record("info", "listen: 127.0.0.1:1\n2026-01-01 INFO forged"));
  assertEquals(line.split("\n").length, 2, "one line and its newline");
});
