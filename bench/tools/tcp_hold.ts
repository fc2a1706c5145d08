/**
 * Idle connections for the memory benchmark.
 * `tcp_hold.ts server PORT`: accept and hold every connection.
 * `tcp_hold.ts client PORT N`: open N connections, print "ready", hold them.
 */
const [mode, portText, countText] = Deno.args;
const port = Number(portText);
const held: Deno.Conn[] = [];
if (mode === "server") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  console.log("ready");
  for await (const conn of listener) held.push(conn);
} else {
  const count = Number(countText);
  for (let i = 0; i < count; i += 100) {
    const batch = await Promise.all(
      Array.from(
        { length: Math.min(100, count - i) },
        () => Deno.connect({ hostname: "127.0.0.1", port }),
      ),
    );
    held.push(...batch);
  }
  console.log("ready");
  // Hold until killed: a timer keeps the process alive (a bare pending promise would not).
  setInterval(() => {}, 1 << 30);
}
