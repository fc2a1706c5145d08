/**
 * UDP round trips: `udp_rtt.ts PORT CLIENTS SECONDS SIZE`. Each client sends a
 * datagram and waits for its echo (1 s timeout counts as lost), for SECONDS.
 * Prints JSON: round trips, lost, round trips per second.
 */
const [port, clients, seconds, size] = Deno.args.map(Number);
const target = { transport: "udp" as const, hostname: "127.0.0.1", port };
const deadline = performance.now() + seconds * 1000;
let roundTrips = 0;
let lost = 0;
await Promise.all(Array.from({ length: clients }, async () => {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const payload = new Uint8Array(size);
  const buffer = new Uint8Array(65_536);
  let pending: Promise<unknown> | undefined;
  while (performance.now() < deadline) {
    await socket.send(payload, target);
    pending ??= socket.receive(buffer);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const got = await Promise.race([
      pending.then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 1000)),
    ]);
    clearTimeout(timer);
    if (got) {
      pending = undefined;
      roundTrips++;
    } else lost++;
  }
  socket.close();
  pending?.catch(() => {});
}));
console.log(JSON.stringify({ roundTrips, lost, perSecond: roundTrips / seconds }));
