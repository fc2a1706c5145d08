/**
 * The workloads: each starts its target, then measures through a port (a
 * bouncer's, or the target's own for "direct", the physical limit).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { spawn, stopAll } from "./peers.ts";
import { output, sleep, treeRssKiB, waitForLine, waitForTcp } from "./measure.ts";

const TOOLS = fileURLToPath(new URL("./tools/", import.meta.url));
const PEERS = fileURLToPath(new URL("./peers/", import.meta.url));

/** What one measurement gets. */
export interface MeasureContext {
  /** Where the client connects: the bouncer, or the target for direct. */
  readonly port: number;
  /** The bouncer's process (for memory), or null for direct. */
  readonly pid: number | null;
  /** How long a timed run lasts. */
  readonly seconds: number;
  readonly dir: string;
}

/** One workload. */
export interface Workload {
  readonly id: string;
  readonly title: string;
  readonly unit: string;
  readonly higherIsBetter: boolean;
  readonly protocol: "tcp" | "udp";
  /** Commands it needs on PATH (besides deno). */
  readonly commands: readonly string[];
  /** Whether "direct" (no bouncer) is measured as the physical limit. */
  readonly direct: boolean;
  /** Bouncers to skip, with why (e.g. socat forks 10,000 processes). */
  readonly skip?: Readonly<Record<string, string>>;
  /**
   * Where one run gives several figures (latency percentiles): the rows it
   * reports, and `measure` resolves to a figure per row id.
   */
  readonly rows?: readonly Pick<Workload, "id" | "title" | "unit" | "higherIsBetter">[];
  /** Starts the target on `port`; resolves to its stopper. */
  target(port: number, dir: string): Promise<() => Promise<void>>;
  measure(context: MeasureContext): Promise<number | Readonly<Record<string, number>>>;
}

function stopper(child: Deno.ChildProcess): () => Promise<void> {
  return () => stopAll([child]);
}

function denoTool(name: string, args: (string | number)[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", `${TOOLS}${name}`, ...args.map(String)],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
}

async function iperfTarget(port: number): Promise<() => Promise<void>> {
  const child = spawn("iperf3", ["-s", "-B", "127.0.0.1", "-p", String(port)]);
  await waitForTcp(port);
  return stopper(child);
}

async function nginxTarget(port: number, dir: string): Promise<() => Promise<void>> {
  // nginx workers run as an unprivileged user: the page must be readable to them.
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/www`, { recursive: true, mode: 0o755 });
  await Deno.writeTextFile(
    `${dir}/www/index.html`,
    "<html><body>" + "portbounce ".repeat(50) + "</body></html>\n",
  );
  let text = await Deno.readTextFile(`${PEERS}nginx-http-target.conf`);
  text = text.replaceAll("{{TARGET}}", String(port)).replaceAll("{{DIR}}", dir);
  await Deno.writeTextFile(`${dir}/nginx-http-target.conf`, text);
  const child = spawn("nginx", [
    "-c",
    `${dir}/nginx-http-target.conf`,
    "-p",
    dir,
    "-e",
    `${dir}/nginx-target.error.log`,
  ]);
  await waitForTcp(port);
  return stopper(child);
}

async function udpEchoTarget(port: number): Promise<() => Promise<void>> {
  const child = denoTool("udp_echo.ts", [port]);
  await waitForLine(child, "ready");
  return stopper(child);
}

async function holdTarget(port: number): Promise<() => Promise<void>> {
  const child = denoTool("tcp_hold.ts", ["server", port]);
  await waitForLine(child, "ready");
  return stopper(child);
}

export async function iperfTcp(port: number, seconds: number, streams: number): Promise<number> {
  const report = JSON.parse(
    await output("iperf3", [
      "-c",
      "127.0.0.1",
      "-p",
      String(port),
      "-t",
      String(seconds),
      "-P",
      String(streams),
      "-J",
    ]),
  );
  return report.end.sum_received.bits_per_second / 1e9;
}

export async function wrk(port: number, seconds: number, close: boolean): Promise<number> {
  const args = ["-t", "2", "-c", "50", "-d", `${seconds}s`, `http://127.0.0.1:${port}/index.html`];
  if (close) args.unshift("-H", "Connection: close");
  const text = await output("wrk", args);
  const match = /Requests\/sec:\s+([\d.]+)/.exec(text);
  if (!match) throw new Error(`wrk printed no rate:\n${text}`);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  if (non2xx) throw new Error(`wrk got ${non2xx[1]} error responses:\n${text}`);
  const errors = /Socket errors: (.*)/.exec(text);
  if (errors) console.error(`    wrk socket errors on ${port}: ${errors[1]}`);
  return Number(match[1]);
}

async function sockperfTarget(port: number): Promise<() => Promise<void>> {
  const child = spawn("sockperf", ["server", "--tcp", "-i", "127.0.0.1", "-p", String(port)]);
  await waitForTcp(port);
  return stopper(child);
}

/** Round trips of 64 bytes this many times a second: light load, where latency is the relay's own. */
const LATENCY_RATE = 4_000;

/** Percentiles of the full round trip (µs) of 64-byte messages over TCP at a fixed rate. */
async function tcpLatency(port: number, seconds: number): Promise<Record<string, number>> {
  const text = await output("sockperf", [
    "ping-pong",
    "--tcp",
    "-i",
    "127.0.0.1",
    "-p",
    String(port),
    "-m",
    "64",
    "--mps",
    String(LATENCY_RATE),
    "-t",
    String(seconds),
    "--full-rtt",
  ]);
  const percentile = (p: string) => {
    const match = new RegExp(`percentile ${p.replace(".", "\\.")} =\\s+([\\d.]+)`).exec(text);
    if (!match) throw new Error(`sockperf printed no percentile ${p}:\n${text}`);
    return Number(match[1]);
  };
  return {
    "latency-p50": percentile("50.000"),
    "latency-p99": percentile("99.000"),
    "latency-p999": percentile("99.900"),
  };
}

/** The UDP rates tried (Mbit/s): doubling, with a ceiling above what loopback carries directly. */
const UDP_RATES = [50, 100, 200, 400, 800, 1600, 3200, 6400];

/**
 * Highest 1,400-byte UDP rate (Mbit/s received) whose loss stays under 1%:
 * doubling until loss reaches 1%, then three halvings of the step between
 * the last rate that held and the first that did not.
 */
async function udpThroughput(port: number, seconds: number): Promise<number> {
  let best = 0;
  let held = 0;
  let failed: number | undefined;
  for (const rate of UDP_RATES) {
    const run = await udpRun(port, seconds, rate);
    if (typeof run === "string") {
      if (held === 0) throw new Error(`at ${rate} Mbit/s: ${run}`);
      failed = rate;
      break;
    }
    [best, held] = [Math.max(best, run), rate];
  }
  for (let step = 0; failed !== undefined && step < 3; step++) {
    const rate = Math.round((held + failed) / 2);
    const run = await udpRun(port, seconds, rate);
    if (typeof run === "string") failed = rate;
    else [best, held] = [Math.max(best, run), rate];
  }
  return best;
}

/** One iperf3 UDP run offering `rate` Mbit/s: what was received, or why it did not hold. */
async function udpRun(port: number, seconds: number, rate: number): Promise<number | string> {
  const args = ["-c", "127.0.0.1", "-p", String(port), "-u", "-b", `${rate}M`, "-l", "1400"];
  const report = JSON.parse(
    await output("iperf3", [...args, "-t", String(seconds), "-J"])
      .catch((error) => JSON.stringify({ error: String(error) })),
  );
  const sum = report.end?.sum;
  if (!sum) return String(report.error);
  if (sum.lost_percent >= 1) return `loss of ${sum.lost_percent.toFixed(1)}%`;
  return sum.bits_per_second / 1e6;
}

export const WORKLOADS: readonly Workload[] = [
  {
    id: "bulk-1",
    title: "Bulk TCP, 1 stream (iperf3)",
    unit: "Gbit/s",
    higherIsBetter: true,
    protocol: "tcp",
    commands: ["iperf3"],
    direct: true,
    target: iperfTarget,
    measure: ({ port, seconds }) => iperfTcp(port, seconds, 1),
  },
  {
    id: "bulk-8",
    title: "Bulk TCP, 8 streams (iperf3 -P 8)",
    unit: "Gbit/s",
    higherIsBetter: true,
    protocol: "tcp",
    commands: ["iperf3"],
    direct: true,
    target: iperfTarget,
    measure: ({ port, seconds }) => iperfTcp(port, seconds, 8),
  },
  {
    id: "keepalive",
    title: "HTTP keep-alive requests (wrk -c50 to nginx)",
    unit: "req/s",
    higherIsBetter: true,
    protocol: "tcp",
    commands: ["wrk", "nginx"],
    direct: true,
    target: nginxTarget,
    measure: ({ port, seconds }) => wrk(port, seconds, false),
  },
  {
    id: "connrate",
    title: "New connection per request (wrk, Connection: close)",
    unit: "conn/s",
    higherIsBetter: true,
    protocol: "tcp",
    commands: ["wrk", "nginx"],
    direct: true,
    target: nginxTarget,
    measure: ({ port, seconds }) => wrk(port, seconds, true),
  },
  {
    id: "udp-rtt",
    title: "UDP 64-byte round trips, 16 clients",
    unit: "rt/s",
    higherIsBetter: true,
    protocol: "udp",
    commands: [],
    direct: true,
    target: udpEchoTarget,
    async measure({ port, seconds }) {
      const child = denoTool("udp_rtt.ts", [port, 16, seconds, 64]);
      const line = await waitForLine(child, "{", (seconds + 30) * 1000);
      await child.status;
      return JSON.parse(line).perSecond;
    },
  },
  {
    id: "latency",
    title: `TCP 64-byte round trips at ${LATENCY_RATE.toLocaleString("en-US")}/s (sockperf)`,
    unit: "µs",
    higherIsBetter: false,
    protocol: "tcp",
    commands: ["sockperf"],
    direct: true,
    rows: [
      {
        id: "latency-p50",
        title: "TCP round trip, p50 (sockperf, 64 B at 4,000/s)",
        unit: "µs",
        higherIsBetter: false,
      },
      { id: "latency-p99", title: "TCP round trip, p99", unit: "µs", higherIsBetter: false },
      { id: "latency-p999", title: "TCP round trip, p99.9", unit: "µs", higherIsBetter: false },
    ],
    target: sockperfTarget,
    measure: ({ port, seconds }) => tcpLatency(port, seconds),
  },
  {
    id: "udp-1400",
    title: "UDP 1,400-byte throughput with loss under 1% (iperf3 -u)",
    unit: "Mbit/s",
    higherIsBetter: true,
    protocol: "udp",
    commands: ["iperf3"],
    direct: true,
    target: iperfTarget,
    measure: ({ port, seconds }) => udpThroughput(port, Math.max(1, Math.min(seconds, 3))),
  },
  {
    id: "mem-tcp",
    title: "Memory per idle proxied TCP connection (5,000 held)",
    unit: "KiB/conn",
    higherIsBetter: false,
    protocol: "tcp",
    commands: [],
    direct: false,
    target: holdTarget,
    async measure({ port, pid }) {
      const before = await treeRssKiB(pid!);
      const client = denoTool("tcp_hold.ts", ["client", port, 5000]);
      try {
        await waitForLine(client, "ready");
        await sleep(2_000);
        const perConnection = (await treeRssKiB(pid!) - before) / 5000;
        if (perConnection <= 0) throw new Error("RSS did not grow: the connections were not held");
        return perConnection;
      } finally {
        await stopper(client)();
      }
    },
  },
  {
    id: "mem-udp",
    title: "Memory per idle UDP session (10,000 held, measured after 12 s idle)",
    unit: "KiB/session",
    higherIsBetter: false,
    protocol: "udp",
    commands: [],
    direct: false,
    skip: { socat: "forks one process per UDP client: 10,000 processes" },
    target: udpEchoTarget,
    async measure({ port, pid }) {
      const before = await treeRssKiB(pid!);
      const client = denoTool("udp_sessions.ts", [port, 10_000]);
      try {
        const ready = await waitForLine(client, "ready");
        const answered = Number(ready.split(" ")[1]);
        if (answered < 9_900) console.error(`    only ${answered} of 10,000 UDP sessions answered`);
        if (answered < 1_000) throw new Error(`only ${answered} of 10,000 UDP sessions answered`);
        await sleep(12_000);
        // Per session that was really set up (a relay may refuse or drop some).
        const perSession = (await treeRssKiB(pid!) - before) / answered;
        if (perSession <= 0) throw new Error("RSS did not grow: the sessions were not held");
        return perSession;
      } finally {
        await stopper(client)();
      }
    },
  },
];
