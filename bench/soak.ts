/**
 * `deno task soak`: a bounded soak of the real CLI. Mixed TCP and UDP traffic
 * (every byte checked by SHA-256), a reload every 30 s that adds and removes
 * a listener, RSS and open descriptors sampled every 5 s. Writes
 * bench/results/soak.md and soak.svg and fails if a byte was corrupted or RSS
 * or descriptors grew after warm-up.
 *
 *   deno task soak                 10 minutes
 *   deno task soak --minutes 2
 *   deno task soak --workers 2     two isolates (report: soak-2w.md)
 *
 * Traffic goes to loopback only and stops by itself.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { freePort, sleep, treeRssKiB } from "./measure.ts";
import { portbounceRun } from "./peers.ts";

const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));
const { values } = parseArgs({
  args: Deno.args,
  options: { minutes: { type: "string" }, workers: { type: "string" } },
});
// With workers, the report goes beside the one-isolate report: soak-2w.md.
const workers = Number(values.workers ?? 1);
const suffix = workers > 1 ? `-${workers}w` : "";
const durationMs = Number(values.minutes ?? 10) * 60_000;
const RELOAD_EVERY_MS = 30_000;
const SAMPLE_EVERY_MS = 5_000;
const WARM_UP_MS = Math.min(60_000, durationMs / 5);

const sha = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
function random(size: number): Uint8Array {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65_536) {
    crypto.getRandomValues(data.subarray(i, Math.min(size, i + 65_536)));
  }
  return data;
}

// Targets: a TCP echo and a UDP echo, in this process.
const tcpTarget = Deno.listen({ hostname: "127.0.0.1", port: 0 });
(async () => {
  for await (const conn of tcpTarget) {
    (async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        for (let w = 0; w < n;) w += await conn.write(buffer.subarray(w, n));
      }
      await conn.closeWrite();
      conn.close();
    })().catch(() => {});
  }
})();
const udpTarget = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
(async () => {
  const buffer = new Uint8Array(65_536);
  for (;;) {
    const [data, from] = await udpTarget.receive(buffer);
    await udpTarget.send(data, from);
  }
})().catch(() => {});

const [tcpPort, udpPort, churnPort] = [freePort(), freePort(), freePort()];
const dir = await Deno.makeTempDir({ prefix: "portbounce-soak-" });
const rules = (withChurn: boolean) =>
  `[server]\ndrain_timeout = "5s"\n[defaults]\nlog = ["error"]\n` +
  `[[rule]]\nname = "tcp"\nlisten = "127.0.0.1:${tcpPort}"\nbounce_to = "127.0.0.1:${tcpTarget.addr.port}"\n` +
  `[[rule]]\nname = "udp"\nprotocol = "udp"\nlisten = "127.0.0.1:${udpPort}"\nbounce_to = "127.0.0.1:${
    (udpTarget.addr as Deno.NetAddr).port
  }"\n` +
  (withChurn
    ? `[[rule]]\nname = "churn"\nlisten = "127.0.0.1:${churnPort}"\nbounce_to = "127.0.0.1:${tcpTarget.addr.port}"\n`
    : "");
await Deno.writeTextFile(`${dir}/rules.toml`, rules(true));
const bouncer = new Deno.Command(Deno.execPath(), {
  args: await portbounceRun(`${dir}/rules.toml`, [
    "--ready-file",
    `${dir}/ready.json`,
    "--workers",
    String(workers),
  ]),
  stdout: "null",
  stderr: "piped",
}).spawn();
const bouncerLog: string[] = [];
const logReading = (async () => {
  for await (const chunk of bouncer.stderr.pipeThrough(new TextDecoderStream())) {
    bouncerLog.push(...chunk.split("\n"));
  }
})();
while (!(await Deno.stat(`${dir}/ready.json`).catch(() => null))) await sleep(20);

const totals = {
  tcpSessions: 0,
  udpExchanges: 0,
  bytes: 0,
  corrupted: 0,
  errors: 0,
  reloads: 0,
  udpLost: 0,
};
const started = performance.now();
const running = () => performance.now() - started < durationMs;

async function tcpWorker(port: () => number): Promise<void> {
  while (running()) {
    const payload = random(1 + Math.floor(Math.random() * 256 * 1024));
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: port() });
      const sending = (async () => {
        for (let w = 0; w < payload.length;) w += await conn.write(payload.subarray(w));
        await conn.closeWrite();
      })();
      const hash = createHash("sha256");
      let got = 0;
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        hash.update(buffer.subarray(0, n));
        got += n;
      }
      await sending;
      conn.close();
      totals.tcpSessions++;
      totals.bytes += got;
      if (got !== payload.length || hash.digest("hex") !== sha(payload)) totals.corrupted++;
    } catch {
      totals.errors++;
      await sleep(10);
    }
  }
}

async function udpWorker(): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const buffer = new Uint8Array(65_536);
  let pending: Promise<[Uint8Array, Deno.Addr]> | undefined;
  while (running()) {
    const payload = random(1 + Math.floor(Math.random() * 8_192));
    await socket.send(payload, { transport: "udp", hostname: "127.0.0.1", port: udpPort });
    pending ??= socket.receive(buffer);
    const reply = await Promise.race([pending, sleep(1_000).then(() => null)]);
    if (reply === null) {
      totals.udpLost++;
      continue;
    }
    pending = undefined;
    totals.udpExchanges++;
    totals.bytes += reply[0].length;
    if (sha(reply[0]) !== sha(payload)) totals.corrupted++;
  }
  socket.close();
  pending?.catch(() => {});
}

let churnOn = true;
const reloader = (async () => {
  while (running()) {
    await sleep(RELOAD_EVERY_MS);
    if (!running()) break;
    const adding = !churnOn;
    // Move the workers off the churn listener before it is removed, and onto it only once
    // the reload has had time to bind it: the harness must not count its own races.
    if (!adding) churnOn = false;
    await Deno.writeTextFile(`${dir}/rules.toml`, rules(adding));
    bouncer.kill("SIGHUP");
    totals.reloads++;
    if (adding) {
      await sleep(1_000);
      churnOn = true;
    }
  }
})();

const samples: { t: number; rssKiB: number; fds: number; sessions: number }[] = [];
const sampler = (async () => {
  while (running()) {
    let fds = 0;
    for await (const _ of Deno.readDir(`/proc/${bouncer.pid}/fd`)) fds++;
    samples.push({
      t: (performance.now() - started) / 1000,
      rssKiB: await treeRssKiB(bouncer.pid),
      fds,
      sessions: totals.tcpSessions + totals.udpExchanges,
    });
    await sleep(SAMPLE_EVERY_MS);
  }
})();

await Promise.all([
  ...Array.from({ length: 8 }, () => tcpWorker(() => tcpPort)),
  ...Array.from({ length: 2 }, () => tcpWorker(() => churnOn ? churnPort : tcpPort)),
  ...Array.from({ length: 4 }, () => udpWorker()),
  reloader,
  sampler,
]);
bouncer.kill("SIGTERM");
const { code } = await bouncer.status;
await logReading;

// Growth after warm-up: compare the first and last minute (or fifth) of samples.
const after = samples.filter((s) => s.t * 1000 >= WARM_UP_MS);
const window = Math.max(1, Math.floor(after.length / 5));
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const rssEarly = mean(after.slice(0, window).map((s) => s.rssKiB));
const rssLate = mean(after.slice(-window).map((s) => s.rssKiB));
const fdsEarly = Math.max(...after.slice(0, window).map((s) => s.fds));
const fdsLate = Math.max(...after.slice(-window).map((s) => s.fds));
const errorLines = bouncerLog.filter((l) => / (ERROR|WARNING) /.test(l));

const svgWidth = 760;
const svgHeight = 260;
const maxT = Math.max(...samples.map((s) => s.t), 1);
const maxRss = Math.max(...samples.map((s) => s.rssKiB), 1) * 1.1;
const maxFds = Math.max(...samples.map((s) => s.fds), 1) * 1.1;
const line = (pick: (s: typeof samples[number]) => number, max: number) =>
  samples.map((s) =>
    `${(50 + (s.t / maxT) * (svgWidth - 70)).toFixed(1)},${
      (svgHeight - 30 - (pick(s) / max) * (svgHeight - 60)).toFixed(1)
    }`
  ).join(" ");
const svg =
  `<svg xmlns="http://www.w3.org/2000/svg" width="${svgWidth}" height="${svgHeight}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="18" font-size="13" font-weight="bold">portbounce soak: RSS (green, max ${
    (maxRss / 1024).toFixed(0)
  } MiB) and open descriptors (blue, max ${Math.round(maxFds)}) over ${Math.round(maxT)} s</text>
<line x1="50" y1="${svgHeight - 30}" x2="${svgWidth - 20}" y2="${svgHeight - 30}" stroke="#999"/>
<text x="50" y="${svgHeight - 12}">0 s</text><text x="${svgWidth - 60}" y="${svgHeight - 12}">${
    Math.round(maxT)
  } s</text>
<polyline fill="none" stroke="#1b7f3b" stroke-width="2" points="${line((s) => s.rssKiB, maxRss)}"/>
<polyline fill="none" stroke="#3b6fb6" stroke-width="1.5" points="${line((s) => s.fds, maxFds)}"/>
</svg>
`;
const report = `# Soak

${new Date().toISOString()}: ${(durationMs / 60_000).toFixed(1)} minutes against the real CLI${
  workers > 1 ? ` running ${workers} isolates (\`--workers ${workers}\`)` : ""
}, 10 TCP workers
(1 B-256 KiB payloads, echoed and checked by SHA-256), 4 UDP workers (1 B-8 KiB datagrams),
a reload every 30 s adding or removing a listener that 2 of the TCP workers use.

| figure | value |
| --- | ---: |
| TCP sessions | ${totals.tcpSessions.toLocaleString("en-US")} |
| UDP exchanges | ${
  totals.udpExchanges.toLocaleString("en-US")
} (${totals.udpLost} lost and resent) |
| bytes echoed | ${(totals.bytes / 1048576).toFixed(0)} MiB |
| corrupted | ${totals.corrupted} |
| client-side errors | ${totals.errors} |
| reloads | ${totals.reloads} |
| RSS after warm-up, first / last fifth | ${(rssEarly / 1024).toFixed(1)} / ${
  (rssLate / 1024).toFixed(1)
} MiB |
| open descriptors, first / last fifth (max) | ${fdsEarly} / ${fdsLate} |
| warning and error log lines | ${errorLines.length} |
| exit code | ${code} |

![RSS and descriptors over time](soak${suffix}.svg)
`;
await Deno.mkdir(RESULTS, { recursive: true });
await Deno.writeTextFile(`${RESULTS}soak${suffix}.md`, report);
await Deno.writeTextFile(`${RESULTS}soak${suffix}.svg`, svg);
console.log(report);
if (errorLines.length > 0) console.log(errorLines.slice(0, 20).join("\n"));
await Deno.remove(dir, { recursive: true });

const failures = [
  totals.corrupted > 0 ? `${totals.corrupted} corrupted transfers` : "",
  rssLate > rssEarly * 1.15 + 2048 ? `RSS grew from ${rssEarly} to ${rssLate} KiB` : "",
  fdsLate > fdsEarly + 20 ? `descriptors grew from ${fdsEarly} to ${fdsLate}` : "",
  code !== 0 ? `portbounce exited ${code}` : "",
].filter((f) => f !== "");
if (failures.length > 0) {
  console.error(`soak FAILED: ${failures.join("; ")}`);
  Deno.exit(1);
}
console.error("soak passed");
Deno.exit(0);
