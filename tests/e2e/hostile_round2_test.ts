/**
 * What the second adversarial review found (issue #23), each as a
 * regression test: reset floods at the accept loops, the bandwidth limiter
 * (UDP datagrams above the burst, closing a throttled session, throttling
 * taken for a stall), the status endpoint's Host check on wildcard binds and
 * its connection share per client.
 */
import net from "node:net";
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { passRule } from "../fixtures/rules.ts";
import {
  delay,
  echo,
  exchange,
  rawHttp,
  startBouncer,
  statusPort as statusPortOf,
  tcpServer,
} from "./helpers.ts";

/** Connects and resets at once (SO_LINGER 0): the accept that follows fails with ENOTCONN. */
function connectAndReset(port: number, host = "127.0.0.1"): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port }, () => {
      socket.resetAndDestroy();
      resolve();
    });
    socket.on("error", () => resolve());
  });
}

/** Milliseconds `work` took. */
async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

Deno.test("a flood of connect-then-reset clients holds back neither a listener nor the status endpoint", async () => {
  await using target = tcpServer(echo);
  await using bouncer = await startBouncer(
    `[server]\nstatus = "127.0.0.1:0"\n` +
      passRule({ listen: "127.0.0.3:0", target: target.port, extra: 'from = ["127.0.0.2/32"]' }) +
      passRule({ name: "open", listen: "127.0.0.1:0", target: target.port }),
  );
  const statusPort = statusPortOf(bouncer);
  // The first listener's rule blocks 127.0.0.1: the resets come from a client the rules refuse.
  for (
    const [host, port] of [
      ["127.0.0.3", bouncer.port(0)],
      ["127.0.0.1", bouncer.port(1)],
      ["127.0.0.1", statusPort],
    ] as const
  ) {
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 10 }, () => connectAndReset(port, host)));
    }
  }
  // Before the fix each reset doubled a back-off up to 1 s: 30 resets held a listener for 24 s.
  const relayMs = await timed(async () =>
    assertEquals(await exchange(bouncer.port(1), "hi"), "hi")
  );
  const statusMs = await timed(async () =>
    assertMatch(
      await rawHttp(
        statusPort,
        `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${statusPort}\r\n\r\n`,
      ),
      /^HTTP\/1\.1 200 /,
    )
  );
  assert(relayMs < 2_000, `the relay answered after ${Math.round(relayMs)} ms`);
  assert(statusMs < 2_000, `the status endpoint answered after ${Math.round(statusMs)} ms`);
  assert(
    !bouncer.lines().some((line) => /not connected/i.test(line)),
    "a reset before the accept is no listener failure:\n" + bouncer.lines().join("\n"),
  );
});
