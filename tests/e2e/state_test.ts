/**
 * `[server] state` through the real CLI: the client ledger, history and
 * first-traffic time survive a restart; a damaged or oversized state file is
 * set aside with a warning; a file that is not a state file is refused and
 * left as it was; a path that cannot be written is a warning and a count in
 * /metrics, and relaying goes on.
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import {
  echo,
  exchangeFrom,
  freePortRange,
  runCli,
  startPortbounce,
  tcpServer,
  tempDir,
} from "./helpers.ts";

function rules(state: string, listen: number, status: number, target: number, name = "web") {
  return `[server]\nstatus = "127.0.0.1:${status}"\nclient_names = "off"\nstate = "${state}"\n` +
    `[[rule]]\nname = "${name}"\nlisten = "127.0.0.1:${listen}"\nbounce_to = "127.0.0.1:${target}"\n`;
}

async function clients(status: number) {
  return await fetch(`http://127.0.0.1:${status}/clients.json`).then((r) => r.json());
}

Deno.test("state: the ledger, history and first traffic survive a restart; rules gone are dropped", async () => {
  await using target = tcpServer(echo);
  const [listen, status] = [0, 1].map((i) => freePortRange(2) + i);
  await using dir = await tempDir();
  await Deno.mkdir(`${dir}/state`);
  const file = `${dir}/rules.toml`;
  await Deno.writeTextFile(file, rules(`${dir}/state`, listen, status, target.port));
  {
    await using first = await startPortbounce(["run", "-c", file]);
    for (const from of ["127.0.0.3", "127.0.0.4", "127.0.0.3"]) {
      assertEquals((await exchangeFrom(from, listen, "hi")).data, "hi");
    }
    await first.waitForLine(/first traffic for rule web/);
    first.signal("SIGTERM");
    assertEquals((await first.exited()).code, 0);
  }
  const saved = await Deno.readTextFile(`${dir}/state/portbounce-state.json`);
  assert(saved.startsWith('{"portbounce_state":1,'), saved.slice(0, 80));

  {
    await using second = await startPortbounce(["run", "-c", file]);
    await second.waitForLine(/state: kept from .*: the clients and history of 1 rule/);
    const report = await clients(status);
    assertEquals(
      report.rules[0].clients.map((
        c: { address: string; sessions: number },
      ) => [c.address, c.sessions]),
      [["127.0.0.3", 2], ["127.0.0.4", 1]],
    );
    // History: the sessions of before, in their minute.
    const json = await fetch(`http://127.0.0.1:${status}/status.json?history=5`).then((r) =>
      r.json()
    );
    const sessions = json.rules[0].history.reduce(
      (n: number, b: { sessions: number }) => n + b.sessions,
      0,
    );
    // Restarted within the same minute, that minute is not put back (it is under way again).
    const sameMinute = Math.floor(Date.now() / 60_000) ===
      Math.floor(Date.parse(report.rules[0].clients[0].last_seen) / 60_000);
    assertEquals(sessions, sameMinute ? 0 : 3);
    assert(json.rules[0].first_session !== null);
    // The first traffic was before: it is not announced again.
    assertEquals((await exchangeFrom("127.0.0.5", listen, "x")).data, "x");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assertEquals(second.lines().some((l) => l.includes("first traffic")), false);
    second.signal("SIGTERM");
    assertEquals((await second.exited()).code, 0);
  }
  // The rule renamed: its clients are not the new rule's.
  await Deno.writeTextFile(file, rules(`${dir}/state`, listen, status, target.port, "www"));
  await using _third = await startPortbounce(["run", "-c", file]);
  assertEquals((await clients(status)).rules[0].clients, []);
});

Deno.test("state: damaged or oversized files are set aside; a file that is not one is refused; a path that cannot be written is a warning", async () => {
  await using target = tcpServer(echo);
  const [listen, status] = [0, 1].map((i) => freePortRange(2) + i);
  await using dir = await tempDir();
  const file = `${dir}/rules.toml`;

  // Truncated: set aside, one warning, a fresh start.
  await Deno.writeTextFile(
    `${dir}/cut.json`,
    '{"portbounce_state":1,"written":"2026-12-06T09:00:00Z","rul',
  );
  await Deno.writeTextFile(file, rules(`${dir}/cut.json`, listen, status, target.port));
  {
    await using bouncer = await startPortbounce(["run", "-c", file]);
    const line = await bouncer.waitForLine(/cannot be used/);
    assertIncludes(line, "not whole JSON");
    assertIncludes(line, "set aside as");
    const aside = [...Deno.readDirSync(`${dir}`)].filter((e) =>
      e.name.startsWith("cut.json.unreadable-")
    );
    assertEquals(aside.length, 1);
    assertEquals((await exchangeFrom("127.0.0.3", listen, "a")).data, "a");
  }

  // 1 GiB (sparse): not read, set aside.
  {
    const big = await Deno.open(`${dir}/big.json`, { write: true, create: true });
    await big.write(new TextEncoder().encode('{"portbounce_state":1,'));
    await big.truncate(1024 * 1024 * 1024);
    big.close();
    await Deno.writeTextFile(file, rules(`${dir}/big.json`, listen, status, target.port));
    await using bouncer = await startPortbounce(["run", "-c", file]);
    const line = await bouncer.waitForLine(/cannot be used/);
    assertIncludes(line, "1 GiB, more than the 32 MiB read");
  }

  // Not a state file: refused at start (exit 2), and left as it was.
  await Deno.writeTextFile(`${dir}/notes.txt`, "my notes\n");
  await Deno.writeTextFile(file, rules(`${dir}/notes.txt`, listen, status, target.port));
  const refused = await runCli(["run", "-c", file]);
  assertEquals(refused.code, 2);
  assertIncludes(
    refused.stderr,
    `${dir}/notes.txt is not a portbounce state file, and would be overwritten`,
  );
  assertEquals(await Deno.readTextFile(`${dir}/notes.txt`), "my notes\n");

  // A directory that does not exist: relaying goes on, the failure is said and counted.
  await Deno.writeTextFile(file, rules(`${dir}/missing/state.json`, listen, status, target.port));
  await using bouncer = await startPortbounce(["run", "-c", file]);
  await bouncer.waitForLine(/state: cannot write .*missing\/state\.json/);
  assertEquals((await exchangeFrom("127.0.0.3", listen, "b")).data, "b");
  const metrics = await fetch(`http://127.0.0.1:${status}/metrics`).then((r) => r.text());
  assertIncludes(metrics, "portbounce_state_write_failures_total 1");
});
