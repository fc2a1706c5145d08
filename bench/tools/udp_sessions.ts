/**
 * Idle UDP sessions for the memory benchmark: `udp_sessions.ts PORT N`. Opens
 * N sockets, each sends one datagram through the bouncer and waits for the
 * echo, then prints "ready" and holds them open (idle).
 */
const [port, count] = Deno.args.map(Number);
const target = { transport: "udp" as const, hostname: "127.0.0.1", port };
const sockets: Deno.DatagramConn[] = [];
let answered = 0;
for (let i = 0; i < count; i += 200) {
  const batch = Array.from(
    { length: Math.min(200, count - i) },
    () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
  );
  sockets.push(...batch);
  await Promise.all(batch.map(async (socket) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      await socket.send(new Uint8Array(16), target);
      const reply = socket.receive(new Uint8Array(64));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ok = await Promise.race([
        reply.then(() => true),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 500)),
      ]);
      clearTimeout(timer);
      if (ok) {
        answered++;
        return;
      }
      reply.catch(() => {});
    }
  }));
}
console.log(`ready ${answered}`);
// Hold until killed: a timer keeps the process alive (a bare pending promise would not).
setInterval(() => {}, 1 << 30);
