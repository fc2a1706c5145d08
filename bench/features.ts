/**
 * What each per-rule feature costs, and whether `bandwidth` holds its rate
 * and stays fair: `deno task bench:features`. Writes bench/results/features.md.
 *
 * Variants of one rule, run from source like `deno task bench`, interleaved:
 * plain; `source` (connects through node:net, which can bind a local
 * address, instead of Deno.connect); `proxy_protocol` v1 and v2 (to an nginx
 * port that expects the header); `bandwidth` far above what loopback moves
 * (the limiter's bookkeeping without its waits). Then a rule limited to
 * 20 MiB/s: one bulk download for 10 s (the rate it reached) while an
 * interactive session of the same rule does round trips (their latency,
 * against the same without the download). The client ledger: new connections with
 * it against without, in more rounds, and its own cost per session from a new address.
 *
 *   deno task bench:features [--rounds 3] [--seconds 4]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { freePort, median, sleep, waitForListen, waitForTcp } from "./measure.ts";
import { portbounceRun, spawn, startNginx, stopAll } from "./peers.ts";
import { iperfTcp, wrk } from "./workloads.ts";

const BENCH = fileURLToPath(new URL("./", import.meta.url));

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string" }, seconds: { type: "string" } },
});
const rounds = Number(values.rounds ?? 3);
const seconds = Number(values.seconds ?? 4);

interface Variant {
  readonly name: string;
  /** Extra rule keys. */
  readonly keys: string;
  /** Whether the target must expect a PROXY header. */
  readonly proxy: boolean;
  /** Extra `[server]` keys. */
  readonly server?: string;
}

const VARIANTS: readonly Variant[] = [
  { name: "plain", keys: "", proxy: false },
  { name: "source", keys: 'source = "127.0.0.1"', proxy: false },
  { name: "proxy v1", keys: 'proxy_protocol = "v1"', proxy: true },
  { name: "proxy v2", keys: 'proxy_protocol = "v2"', proxy: true },
  { name: "limiter", keys: 'bandwidth = "100GiB/s"', proxy: false },
];

/** The client ledger is on in every variant above; this pair is measured apart, in more rounds. */
const LEDGER_PAIR: readonly Variant[] = [
  { name: "ledger", keys: "", proxy: false },
  { name: "no ledger", keys: "", proxy: false, server: "clients = 0" },
];
/** Rounds of the ledger pair: its difference is small beside this machine's noise. */
const LEDGER_ROUNDS = 8;

const WORKLOADS = [
  { id: "connrate", title: "new connection per request (conn/s)", proxyOk: true },
  { id: "keepalive", title: "HTTP keep-alive (req/s)", proxyOk: true },
  { id: "bulk-1", title: "bulk TCP, 1 stream (Gbit/s)", proxyOk: false },
] as const;

/** Starts portbounce on a rule file; resolves once it listens. */
async function startPortbounce(dir: string, rules: string, port: number) {
  await Deno.writeTextFile(`${dir}/rules.toml`, rules);
  const child = spawn(Deno.execPath(), await portbounceRun(`${dir}/rules.toml`));
  await waitForListen(port);
  return { stop: () => stopAll([child]) };
}

function rule(name: string, listen: number, target: number, keys: string): string {
  return `[[rule]]\nname = "${name}"\nlisten = "127.0.0.1:${listen}"\n` +
    `bounce_to = "127.0.0.1:${target}"\n${keys}\n`;
}

const head = (server = "") =>
  `[server]\ndrain_timeout = "1s"\n${server}\n[defaults]\nlog = ["error"]\n`;
const HEAD = head();

/**
 * New connections per request through the ledger pair, interleaved; their
 * medians, and the median of each round's ratio (rounds drift together on a
 * shared machine: the ratio within a round is steadier than either rate).
 */
async function measureLedgerRate(
  dir: string,
): Promise<{ on: number; off: number; ratio: number }> {
  const http = freePort();
  const stopNginx = await startNginx(dir, http, freePort());
  const rates = new Map<string, number[]>();
  try {
    for (let round = 0; round < LEDGER_ROUNDS; round++) {
      for (const variant of round % 2 === 0 ? LEDGER_PAIR : [...LEDGER_PAIR].reverse()) {
        const listen = freePort();
        const bouncer = await startPortbounce(
          dir,
          head(variant.server) + rule("http", listen, http, ""),
          listen,
        );
        try {
          const value = await wrk(listen, seconds, true);
          console.error(
            `ledger round ${round + 1}/${LEDGER_ROUNDS} ${variant.name}: ${value.toFixed(0)}`,
          );
          rates.set(variant.name, [...(rates.get(variant.name) ?? []), value]);
        } finally {
          await bouncer.stop();
        }
      }
    }
  } finally {
    await stopNginx();
  }
  const [on, off] = [rates.get("ledger")!, rates.get("no ledger")!];
  return { on: median(on), off: median(off), ratio: median(on.map((v, i) => v / off[i])) };
}

async function measureFeatures(dir: string): Promise<Map<string, Map<string, number[]>>> {
  const [http, httpProxy, iperf] = [freePort(), freePort(), freePort()];
  const stopNginx = await startNginx(dir, http, httpProxy);
  const iperfServer = spawn("iperf3", ["-s", "-B", "127.0.0.1", "-p", String(iperf)]);
  await waitForTcp(iperf);
  const samples = new Map<string, Map<string, number[]>>();
  const record = (workload: string, variant: string, value: number) => {
    const byVariant = samples.get(workload) ?? new Map<string, number[]>();
    samples.set(workload, byVariant);
    byVariant.set(variant, [...(byVariant.get(variant) ?? []), value]);
  };
  try {
    for (let round = 0; round < rounds; round++) {
      const order = [
        ...VARIANTS.slice(round % VARIANTS.length),
        ...VARIANTS.slice(0, round % VARIANTS.length),
      ];
      for (const variant of order) {
        const [httpListen, bulkListen] = [freePort(), freePort()];
        const rules = head(variant.server) +
          rule("http", httpListen, variant.proxy ? httpProxy : http, variant.keys) +
          (variant.proxy ? "" : rule("bulk", bulkListen, iperf, variant.keys));
        const bouncer = await startPortbounce(dir, rules, httpListen);
        try {
          for (const workload of WORKLOADS) {
            if (variant.proxy && !workload.proxyOk) continue;
            const value = workload.id === "bulk-1"
              ? await iperfTcp(bulkListen, seconds, 1)
              : await wrk(httpListen, seconds, workload.id === "connrate");
            console.error(
              `round ${round + 1}/${rounds} ${workload.id} ${variant.name}: ${value.toFixed(2)}`,
            );
            record(workload.id, variant.name, value);
          }
        } finally {
          await bouncer.stop();
        }
      }
    }
  } finally {
    await stopAll([iperfServer]);
    await stopNginx();
  }
  return samples;
}

/** What the rule loses to the ledger: the median of the rounds' ratios. */
function ledgerCost(rate: { ratio: number }): string {
  const cost = (1 - rate.ratio) * 100;
  return cost <= 0
    ? `no cost measurable (${(-cost).toFixed(1)}% faster with it)`
    : `the ledger costs ${cost.toFixed(1)}% of the rate`;
}

/** A target that streams to one kind of client and echoes to the other (first byte decides). */
function mixedTarget(): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const chunk = new Uint8Array(64 * 1024);
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const first = new Uint8Array(64);
        try {
          const n = await conn.read(first);
          if (n === null) return;
          if (first[0] === 0x42) { // "B": bulk download until the client goes away
            for (;;) await conn.write(chunk);
          }
          await conn.write(first.subarray(0, n));
          for (;;) {
            const m = await conn.read(first);
            if (m === null) break;
            await conn.write(first.subarray(0, m));
          }
        } catch {
          // The client went away.
        } finally {
          try {
            conn.close();
          } catch {
            // Closed already.
          }
        }
      })();
    }
  })().catch(() => {});
  return { port: listener.addr.port, close: () => listener.close() };
}

/** Round trips of 64 bytes every 50 ms for `ms`; returns their latencies (ms). */
async function roundTrips(port: number, ms: number): Promise<number[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const message = new Uint8Array(64).fill(0x49); // "I"
  const reply = new Uint8Array(64);
  const latencies: number[] = [];
  const until = performance.now() + ms;
  try {
    while (performance.now() < until) {
      const started = performance.now();
      await conn.write(message);
      for (let got = 0; got < 64;) {
        const n = await conn.read(reply.subarray(got));
        if (n === null) throw new Error("the echo ended");
        got += n;
      }
      latencies.push(performance.now() - started);
      await sleep(50);
    }
  } finally {
    conn.close();
  }
  return latencies;
}

/** Bytes a bulk download through `port` receives in `ms`. */
async function download(port: number, ms: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new Uint8Array([0x42]));
  const buffer = new Uint8Array(256 * 1024);
  let bytes = 0;
  const until = performance.now() + ms;
  try {
    while (performance.now() < until) {
      const n = await conn.read(buffer);
      if (n === null) break;
      bytes += n;
    }
  } finally {
    conn.close();
  }
  return bytes;
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function measureBandwidth(dir: string) {
  const rate = 20 * 1024 * 1024;
  const target = mixedTarget();
  const listen = freePort();
  const bouncer = await startPortbounce(
    dir,
    HEAD + rule("limited", listen, target.port, `bandwidth = "20MiB/s"`),
    listen,
  );
  try {
    const quiet = await roundTrips(listen, 3_000);
    const [bytes, busy] = await Promise.all([download(listen, 10_000), roundTrips(listen, 9_000)]);
    return { rate, bytes, seconds: 10, quiet, busy };
  } finally {
    await bouncer.stop();
    target.close();
  }
}

/**
 * The ledger's own cost per session where wrk cannot reach it: every session
 * from a new address, in a ledger kept at 10,000 (so each one evicts).
 */
async function measureLedger(): Promise<{ nsPerSession: number; sessions: number }> {
  const { ClientLedger } = await import("../src/status/ledger.ts");
  const ledger = new ClientLedger(10_000);
  const sessions = 1_000_000;
  const addresses = Array.from(
    { length: sessions },
    (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  );
  const samples: number[] = [];
  for (let round = 0; round < 5; round++) {
    const started = performance.now();
    for (let i = 0; i < sessions; i++) {
      const entry = ledger.started(addresses[i], "203.0.113.10:443", round * sessions + i);
      entry.bytesUp += 100;
      ledger.ended(entry, round * sessions + i);
    }
    samples.push(((performance.now() - started) * 1e6) / sessions);
  }
  return { nsPerSession: median(samples), sessions };
}

const dir = await Deno.makeTempDir({ prefix: "portbounce-features-" });
try {
  const samples = await measureFeatures(dir);
  const ledger = await measureLedger();
  const ledgerRate = await measureLedgerRate(dir);
  const bandwidth = await measureBandwidth(dir);
  const names = VARIANTS.map((v) => v.name);
  const rows = WORKLOADS.map((w) => {
    const byVariant = samples.get(w.id)!;
    const plain = median(byVariant.get("plain")!);
    return `| ${w.title} | ${
      names.map((name) => {
        const values = byVariant.get(name);
        if (!values) return "–";
        const m = median(values);
        return `${m >= 100 ? Math.round(m).toLocaleString("en-US") : m.toFixed(2)}${
          name === "plain" ? "" : ` (${(m / plain).toFixed(2)}×)`
        }`;
      }).join(" | ")
    } |`;
  });
  const reached = bandwidth.bytes / bandwidth.seconds;
  const report = `# What each feature costs

${
    new Date().toISOString().slice(0, 16).replace("T", " ")
  } UTC, \`deno task bench:features\`: medians of ${rounds} interleaved
rounds, ${seconds} s per run, one rule with each feature against the same rule without (ratio in
brackets; above 1 is faster). Loopback on one machine shared by load generator, bouncer and target.
PROXY variants go to an nginx port that expects the header (iperf3 cannot take one).

| workload | ${names.join(" | ")} |
| --- | ${names.map(() => "---:").join(" | ")} |
${rows.join("\n")}

## The client ledger

- New connections per request, with the ledger against without (\`clients = 0\`), medians of
  ${LEDGER_ROUNDS} interleaved rounds: ${
    Math.round(ledgerRate.on).toLocaleString("en-US")
  } against ${
    Math.round(ledgerRate.off).toLocaleString("en-US")
  } conn/s; by the median of each round's ratio, ${
    ledgerCost(ledgerRate)
  } (one client address: wrk's; rounds differ by up to a fifth here).
- Every session from a new address in a full ledger of 10,000 (each one evicts): ${
    ledger.nsPerSession.toFixed(0)
  } ns a session (median of 5 runs of ${ledger.sessions.toLocaleString("en-US")}), ${
    (ledger.nsPerSession / 1000).toFixed(2)
  }% of the 100 µs a connection takes at 10,000
  connections/s.

## bandwidth = "20MiB/s"

- One download for ${bandwidth.seconds} s through the limited rule: ${
    (reached / 1024 / 1024).toFixed(2)
  } MiB/s, ${(reached / bandwidth.rate * 100).toFixed(1)}% of the rate.
- Round trips of 64 bytes through the same rule, every 50 ms: median ${
    median(bandwidth.quiet).toFixed(2)
  } ms, p99 ${percentile(bandwidth.quiet, 0.99).toFixed(2)} ms alone; median ${
    median(bandwidth.busy).toFixed(2)
  } ms, p99 ${
    percentile(bandwidth.busy, 0.99).toFixed(2)
  } ms while the download runs (${bandwidth.busy.length} round trips).
`;
  await Deno.writeTextFile(`${BENCH}results/features.md`, report);
  console.log(report);
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
