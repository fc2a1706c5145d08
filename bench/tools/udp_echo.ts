/**
 * A UDP echo server for the benchmarks: `udp_echo.ts PORT`. Reuses one buffer.
 * Empty datagrams are not echoed: rinetd 0.73 sends one when it opens a UDP
 * session and stops relaying replies to that client if it comes back.
 */
const port = Number(Deno.args[0]);
const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port });
const buffer = new Uint8Array(65_536);
console.log("ready");
for (;;) {
  const [data, from] = await socket.receive(buffer);
  if (data.length > 0) await socket.send(data, from);
}
