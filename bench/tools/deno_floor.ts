/**
 * The runtime's floor: the smallest correct TCP relay Deno can run, as a peer
 * in `deno task bench` so portbounce is measured against what Deno itself
 * allows. Read/write loops with half-close, 16 KiB buffers, the connect off
 * the accept loop; no rules, no counters, no timers, no logging.
 *
 *   deno run --allow-net bench/tools/deno_floor.ts LISTEN_PORT TARGET_PORT [WORKERS]
 *
 * With WORKERS > 1, that many isolates each accept on the port (reusePort).
 *
 * @module
 */

async function pipe(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      for (let written = 0; written < n;) written += await to.write(buffer.subarray(written, n));
    }
    await to.closeWrite();
  } catch {
    // Either side went away; the session closes both.
  }
}

async function relay(client: Deno.TcpConn, targetPort: number): Promise<void> {
  let target: Deno.TcpConn;
  try {
    target = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
  } catch {
    client.close();
    return;
  }
  await Promise.all([pipe(client, target), pipe(target, client)]);
  for (const conn of [client, target]) {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

async function serve(listenPort: number, targetPort: number, reusePort: boolean): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: listenPort, reusePort });
  for await (const client of listener) relay(client, targetPort);
}

const inWorker = "WorkerGlobalScope" in globalThis;

if (inWorker) {
  (globalThis as unknown as { onmessage: (event: MessageEvent) => void }).onmessage = (event) => {
    const [listen, target] = event.data as [number, number];
    serve(listen, target, true);
  };
} else if (import.meta.main) {
  const [listen, target, workers = 1] = Deno.args.map(Number);
  if (!listen || !target) {
    console.error("usage: deno_floor.ts LISTEN_PORT TARGET_PORT [WORKERS]");
    Deno.exit(2);
  }
  if (workers <= 1) await serve(listen, target, false);
  else {
    for (let i = 0; i < workers; i++) {
      new Worker(import.meta.url, { type: "module" }).postMessage([listen, target]);
    }
  }
}
