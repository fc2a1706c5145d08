/**
 * Why the UDP listener is `Deno.listenDatagram` and not `node:dgram` (issue
 * #23, item 9): `node:dgram` can size its receive buffer (`recvBufferSize`),
 * `Deno.listenDatagram` cannot, but what does each cost per datagram?
 *
 * `deno run -A --unstable-net bench/tools/udp_socket_apis.ts [ROUNDS]` runs,
 * interleaved, for each API: ping-pong round trips per second (64 B, 3 s) to an
 * echo server on that API, and the receive buffer the server got. Prints JSON.
 */
import dgram from "node:dgram";

type Api = "listenDatagram" | "node:dgram 4 MiB";

/** An echo server on `api`; counts what it receives. */
async function echoServer(api: Api) {
  if (api === "listenDatagram") {
    const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    (async () => {
      const buffer = new Uint8Array(65_536);
      for (;;) {
        const [data, from] = await socket.receive(buffer).catch(() => [null, null] as const);
        if (!data) return;
        await socket.send(data, from).catch(() => {});
      }
    })();
    return {
      port: (socket.addr as Deno.NetAddr).port,
      receiveBuffer: "the system default (net.core.rmem_default)",
      close: () => socket.close(),
    };
  }
  const socket = dgram.createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
  socket.on("message", (message, from) => {
    socket.send(message, from.port, from.address);
  });
  await new Promise<void>((resolve) => {
    socket.on("listening", () => resolve());
    socket.bind(0, "127.0.0.1");
  });
  return {
    port: socket.address().port,
    receiveBuffer: `${socket.getRecvBufferSize()} bytes`,
    close: () => socket.close(),
  };
}

async function roundTrips(port: number, seconds: number): Promise<number> {
  const client = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  const payload = new Uint8Array(64);
  const buffer = new Uint8Array(65_536);
  const end = performance.now() + seconds * 1000;
  let count = 0;
  while (performance.now() < end) {
    await client.send(payload, to);
    await client.receive(buffer);
    count++;
  }
  client.close();
  return Math.round(count / seconds);
}

const rounds = Number(Deno.args[0] ?? 3);
const results: Record<Api, { round_trips_per_s: number[]; receive_buffer: string }> = {
  "listenDatagram": { round_trips_per_s: [], receive_buffer: "" },
  "node:dgram 4 MiB": { round_trips_per_s: [], receive_buffer: "" },
};
for (let round = 0; round < rounds; round++) {
  for (const api of Object.keys(results) as Api[]) {
    const server = await echoServer(api);
    results[api].round_trips_per_s.push(await roundTrips(server.port, 3));
    results[api].receive_buffer = server.receiveBuffer;
    server.close();
  }
}
console.log(JSON.stringify(results, null, 2));
Deno.exit(0);
