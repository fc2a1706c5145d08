/**
 * The UDP engine in-process, with timings shortened so nothing sleeps long:
 * parking of quiet flows and what a parked flow does with a large reply.
 */
import { assertEquals } from "../assert.ts";
import { passRule } from "../fixtures/rules.ts";
import { startDaemon } from "../harness.ts";
import { portOf, randomBytes, receiveWithin, sha256, udpSocket } from "../fixtures/net.ts";

for (const source of [null, "127.0.0.6"]) {
  Deno.test(`a parked (idle) flow detects and reports a reply too large for its small buffer, then unparks${source ? ` (source ${source})` : ""}`, async () => {
    // The target answers only when told to, from the address the bouncer used.
    const target = udpSocket();
    let upstream: Deno.NetAddr | undefined;
    const firstDatagram = target.receive(new Uint8Array(65_536)).then(([, from]) =>
      upstream = from as Deno.NetAddr
    );
    await using bouncer = await startDaemon(
      passRule({
        listen: "127.0.0.1:0",
        target: portOf(target),
        protocol: "udp",
        extra: source ? `source = "${source}"` : "",
      }),
      { tuning: { udpParkAfterMs: 200 } },
    );
    const client = udpSocket();
    try {
      await client.send(new Uint8Array([1]), {
        transport: "udp",
        hostname: "127.0.0.1",
        port: bouncer.port(),
      });
      await firstDatagram;
      await new Promise((resolve) => setTimeout(resolve, 400)); // Quiet past the park time.
      await target.send(randomBytes(5_000), upstream!);
      await bouncer.log.waitFor({
        event: "error",
        error: "reply of 4096 bytes or more arrived while the session was parked and was dropped",
      });
      assertEquals(await receiveWithin(client, 300), null);
      // That reply counted as traffic: the flow is active again and takes any size.
      const big = randomBytes(60_000);
      await target.send(big, upstream!);
      const got = await receiveWithin(client, 1_000);
      assertEquals(got && sha256(got), sha256(big));
      assertEquals(bouncer.daemon.engine.stats.rules.get("u")!.dropped, { truncated: 1 });
    } finally {
      client.close();
      target.close();
    }
  });
}
