/**
 * The client ledger through the whole daemon: every client of each rule (TCP
 * and UDP, refusals of a block rule), the address it reached, its bytes and
 * its name, read from `/clients.json`; the first-traffic line names the first
 * session. The clock is the test's: hours pass without waiting.
 */
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { startDaemon } from "../harness.ts";
import { echo, exchangeFrom, tcpServer, udpEcho, udpSocket } from "../fixtures/net.ts";
import type { ClientsReport } from "../../src/status/clients.ts";

const HOUR = 3_600_000;

Deno.test("ledger: who used each rule, through which address, how much, and their names", async () => {
  await using target = tcpServer(echo);
  await using dns = udpEcho();
  const T0 = Date.UTC(2026, 11, 6, 9, 0, 0);
  let now = T0;
  const asked: string[] = [];
  await using bouncer = await startDaemon(
    `[server]\nstatus = "127.0.0.1:0"\n` +
      `[[rule]]\nname = "web"\nlisten = ["127.0.0.1:0", "127.0.0.2:0"]\nbounce_to = "127.0.0.1:${target.port}"\nlog = []\n` +
      `[[rule]]\nname = "dns"\nprotocol = "udp"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${dns.port}"\nlog = []\n` +
      `[[rule]]\nname = "lab"\naction = "block"\nlisten = "127.0.0.6:0"\nfrom = "127.0.0.5/32"\nlog = []\n`,
    {
      clock: () => now,
      reverseLookup: (address) => {
        asked.push(address);
        return Promise.resolve(address === "127.0.0.3" ? "printer-3.lab" : null);
      },
    },
  );
  const bound = bouncer.daemon.engine.boundAddresses();
  const port = (key: string) => bound.find((b) => b.key === key)!.port;
  const [webNew, webOld] = [port("tcp 127.0.0.1:0"), port("tcp 127.0.0.2:0")];
  const status = bouncer.daemon.status.address!;
  const clients = async (query = "") => {
    const response = await fetch(`http://${status}/clients.json${query}`);
    assertEquals(response.status, 200);
    return await response.json() as ClientsReport;
  };

  // .3 uses the new address twice, .4 the old one once.
  for (const text of ["hello", "hello!"]) {
    assertEquals((await exchangeFrom("127.0.0.3", webNew, text)).data, text);
  }
  now = T0 + 60_000;
  assertEquals((await exchangeFrom("127.0.0.4", webOld, "old", "127.0.0.2")).data, "old");
  // A UDP flow, and a client the block rule refuses.
  const udp = udpSocket();
  await udp.send(new TextEncoder().encode("q"), {
    transport: "udp",
    hostname: "127.0.0.1",
    port: port("udp 127.0.0.1:0"),
  });
  await udp.receive();
  udp.close();
  assertEquals(
    (await exchangeFrom("127.0.0.5", port("tcp 127.0.0.6:0"), "x", "127.0.0.6")).data,
    "",
  );

  // Names are looked up in the background; wait for the one that exists.
  let report = await clients();
  for (let i = 0; i < 100 && report.rules[0].clients.at(-1)?.name !== "printer-3.lab"; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    report = await clients("?since=2h");
  }
  const web = report.rules.find((r) => r.name === "web")!;
  assertEquals(web.clients.map((c) => [c.address, c.name, c.via, c.sessions, c.active]), [
    ["127.0.0.4", null, `127.0.0.2:${webOld}`, 1, 0],
    ["127.0.0.3", "printer-3.lab", `127.0.0.1:${webNew}`, 2, 0],
  ]);
  const printer = web.clients[1];
  assertEquals([printer.bytes_up, printer.bytes_down], [11, 11]);
  assertEquals(printer.first_seen, new Date(T0).toISOString());
  const dnsRule = report.rules.find((r) => r.name === "dns")!;
  assertEquals(dnsRule.clients.map((c) => [c.address, c.bytes_up, c.bytes_down]), [
    ["127.0.0.1", 1, 1],
  ]);
  const lab = report.rules.find((r) => r.name === "lab")!;
  assertEquals(lab.clients.map((c) => [c.address, c.sessions, c.refused]), [["127.0.0.5", 0, 1]]);
  // Each address asked for once, not once per session.
  assertEquals(asked.filter((a) => a === "127.0.0.3").length, 1);

  // Two hours later only .4 comes back: `since` says who used the rule lately.
  now = T0 + 2 * HOUR;
  assertEquals((await exchangeFrom("127.0.0.4", webOld, "again", "127.0.0.2")).data, "again");
  const lately = await clients("?rule=web&since=1h");
  assertEquals(lately.rules.map((r) => r.name), ["web"]);
  assertEquals(lately.rules[0].clients.map((c) => c.address), ["127.0.0.4"]);

  const bad = await fetch(`http://${status}/clients.json?rule=webb`);
  assertEquals(bad.status, 400);
  assertIncludes(await bad.text(), `no rule named "webb"; did you mean "web"?`);
  const badSince = await fetch(`http://${status}/clients.json?since=yesterday`);
  assertEquals(badSince.status, 400);
  await badSince.body?.cancel();
});

Deno.test("first traffic names the first session's client and time, not the latest's at the tick", async () => {
  await using target = tcpServer(echo);
  const T0 = Date.UTC(2026, 11, 6, 9, 0, 0);
  let now = T0;
  await using bouncer = await startDaemon(
    `[[rule]]\nname = "web"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\nlog = []\n`,
    { clock: () => now, reverseLookup: () => Promise.resolve(null) },
  );
  // Three sessions, 20 ms apart on the daemon's clock, before the monitor's tick.
  await exchangeFrom("127.0.0.7", bouncer.port(), "a");
  now = T0 + 20;
  await exchangeFrom("127.0.0.8", bouncer.port(), "b");
  now = T0 + 40;
  await exchangeFrom("127.0.0.9", bouncer.port(), "c");
  now = T0 + 1_000;
  bouncer.daemon.engine.monitor.tick();
  const line = await bouncer.log.waitFor({ alarm: "first-traffic", rule: "web" });
  assert(line.message!.startsWith("first traffic for rule web: 127.0.0.7:"), line.message);
  assert(line.message!.endsWith(` at ${new Date(T0).toISOString()}`), line.message);
});
