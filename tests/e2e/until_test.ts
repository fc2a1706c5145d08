/**
 * Rules that end, through the real CLI: `check` warns before; while running,
 * the rule takes no new session once its `until` passes (logged once as
 * `expired`), its listener closes and a session that spans the moment goes
 * on; a rule already past its end at start passes nothing; `export` leaves
 * it out.
 */
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import {
  echo,
  exchange,
  freePortRange,
  readAll,
  runCli,
  startBouncer,
  tcpServer,
  tempDir,
  writeAll,
} from "./helpers.ts";

Deno.test("until: the rule ends while running; a session that spans it goes on; the other rule stays", async () => {
  await using target = tcpServer(echo);
  const [temp, perm, status] = [0, 1, 2].map((i) => freePortRange(3) + i);
  const until = new Date(Date.now() + 3_000).toISOString();
  const rules = `[server]\nstatus = "127.0.0.1:${status}"\nclient_names = "off"\n` +
    `[[rule]]\nname = "temp"\nlisten = "127.0.0.1:${temp}"\nbounce_to = "127.0.0.1:${target.port}"\nuntil = ${until}\n` +
    `[[rule]]\nname = "perm"\nlisten = "127.0.0.1:${perm}"\nbounce_to = "127.0.0.1:${target.port}"\n`;
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir}/rules.toml`, rules);
  const checked = await runCli(["check", "-c", `${dir}/rules.toml`]);
  assertEquals(checked.code, 0, checked.stderr);
  assertMatch(
    checked.stderr,
    new RegExp(
      `rule "temp" \\(rule #1\\): until: it ends at ${until.replaceAll(".", "\\.")}, in [1-3]s;`,
    ),
  );

  await using bouncer = await startBouncer(rules);
  const report = await fetch(`http://127.0.0.1:${status}/status.json`).then((r) => r.json());
  assertEquals(report.rules[0].expires, until);
  // A session that starts before the end and goes on after it.
  const held = await Deno.connect({ port: temp });
  await writeAll(held, new TextEncoder().encode("before "));
  const line = await bouncer.waitForLine(/expired at/, 15_000);
  assertIncludes(line, `rule temp expired at ${until}: it takes no new session`);
  await bouncer.waitForLine(/"expired: /);
  // New clients of the rule are refused: its listener is closed.
  let refused = false;
  try {
    (await Deno.connect({ port: temp })).close();
  } catch {
    refused = true;
  }
  assert(refused, "the ended rule's listener is closed");
  // The session from before drains: it still relays, every byte.
  await writeAll(held, new TextEncoder().encode("after"));
  await held.closeWrite();
  assertEquals(new TextDecoder().decode(await readAll(held)), "before after");
  held.close();
  assertEquals(await exchange(perm, "still here"), "still here");
  // Logged once.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assertEquals(bouncer.lines().filter((l) => l.includes("expired at")).length, 1);
});

Deno.test("until: a rule past its end at start passes nothing; check warns; export leaves it out", async () => {
  await using target = tcpServer(echo);
  const [old, kept] = [0, 1].map((i) => freePortRange(2) + i);
  const rules =
    `[[rule]]\nname = "old"\nlisten = "127.0.0.1:${old}"\nbounce_to = "127.0.0.1:${target.port}"\nuntil = 2026-01-01T00:00:00Z\n` +
    `[[rule]]\nname = "kept"\nlisten = "127.0.0.1:${kept}"\nbounce_to = "127.0.0.1:${target.port}"\nuntil = 2099-01-01\n`;
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir}/rules.toml`, rules);
  const checked = await runCli(["check", "-c", `${dir}/rules.toml`]);
  assertEquals(checked.code, 0, checked.stderr);
  assertIncludes(
    checked.stderr,
    `rule "old" (rule #1): until: it ended at 2026-01-01T00:00:00.000Z and passes nothing`,
  );
  await using bouncer = await startBouncer(rules);
  await bouncer.waitForLine(/rule old expired at 2026-01-01T00:00:00.000Z/);
  assertEquals(bouncer.ready.listeners.map((l) => l.port), [kept]);
  assertEquals(await exchange(kept, "kept"), "kept");

  const exported = await runCli(["export", "--format", "nftables", "-c", `${dir}/rules.toml`]);
  assertEquals(exported.code, 0, exported.stderr);
  assertIncludes(exported.stdout, "#   old (#1): until 2026-01-01T00:00:00.000Z");
  assertIncludes(
    exported.stdout,
    `#   kept (#2): tcp 127.0.0.1:${kept} from any -> 127.0.0.1:${target.port} until `,
  );
  assertEquals(exported.stdout.includes(`dport ${old}`), false);
});
