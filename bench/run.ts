/**
 * `deno task bench`: portbounce and its peers side by side, interleaved, on
 * this machine; writes bench/results/latest.{md,json} and ratios.svg.
 *
 *   deno task bench                       full run (about 20-30 minutes)
 *   deno task bench --smoke               a ~20 s run that only proves the harness works
 *   deno task bench --rounds 3 --seconds 3 --only bulk-1,udp-rtt --bouncers portbounce,haproxy
 *
 * Installs nothing: peers whose programs are missing are skipped, naming the
 * Debian packages that bring them.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { freePort, median, output, waitForListen } from "./measure.ts";
import { type Bouncer, BOUNCERS, FLOOR_OF, hasCommand } from "./peers.ts";
import {
  renderMarkdown,
  renderSvg,
  type ReportedWorkload,
  type RunInfo,
  type Samples,
} from "./report.ts";
import { type Workload, WORKLOADS } from "./workloads.ts";

const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));

const START: ReportedWorkload = {
  id: "start",
  title: "Start to listening (spawn until the TCP port is in LISTEN)",
  unit: "ms",
  higherIsBetter: false,
};

const { values } = parseArgs({
  args: Deno.args,
  options: {
    smoke: { type: "boolean" },
    rounds: { type: "string" },
    seconds: { type: "string" },
    only: { type: "string" },
    bouncers: { type: "string" },
    out: { type: "string" },
    "render-only": { type: "boolean" },
  },
  strict: true,
});

// --render-only: redo the tables and chart from the samples in latest.json (no measuring).
const previous = values["render-only"]
  ? JSON.parse(await Deno.readTextFile(`${values.out ?? RESULTS}/latest.json`))
  : undefined;

const smoke = values.smoke ?? false;
const rounds = Number(values.rounds ?? (smoke ? 1 : 5));
const seconds = Number(values.seconds ?? (smoke ? 1 : 5));
const only = values.only?.split(",") ?? (smoke ? ["bulk-1", "udp-rtt", "start"] : undefined);
const wantedBouncers = values.bouncers?.split(",");
const outDir = values.out ??
  (smoke ? await Deno.makeTempDir({ prefix: "portbounce-bench-" }) : RESULTS);

// Which bouncers and workloads can run here.
const notes: string[] = [];
const bouncers: Bouncer[] = [];
for (const bouncer of BOUNCERS) {
  if (wantedBouncers && !wantedBouncers.includes(bouncer.name)) continue;
  const missing = [];
  for (const command of bouncer.commands) if (!await hasCommand(command)) missing.push(command);
  if (missing.length > 0) {
    const note = `${bouncer.name} skipped: ${missing.join(", ")} not found (apt-get install ${
      bouncer.packages.join(" ")
    })`;
    console.error(note);
    notes.push(note);
  } else bouncers.push(bouncer);
}
const workloads: Workload[] = [];
for (const workload of WORKLOADS) {
  if (only && !only.includes(workload.id)) continue;
  const missing = [];
  for (const command of workload.commands) if (!await hasCommand(command)) missing.push(command);
  if (missing.length > 0) {
    const note = `${workload.id} skipped: ${
      missing.join(", ")
    } not found (apt-get install iperf3 wrk nginx-light sockperf)`;
    console.error(note);
    notes.push(note);
  } else workloads.push(workload);
}
const measureStart = !only || only.includes("start");

const samples: Samples = {};
function record(workload: string, bouncer: string, value: number): void {
  ((samples[workload] ??= {})[bouncer] ??= []).push(value);
}

/** One measurement of `workload` through `bouncer` (null: direct): a figure per row. */
async function measureOnce(
  workload: Workload,
  bouncer: Bouncer | null,
): Promise<Readonly<Record<string, number>>> {
  const figures = await measureFigures(workload, bouncer);
  return typeof figures === "number" ? { [workload.id]: figures } : figures;
}

async function measureFigures(
  workload: Workload,
  bouncer: Bouncer | null,
): Promise<number | Readonly<Record<string, number>>> {
  const dir = await Deno.makeTempDir({ prefix: "portbounce-bench-run-" });
  const targetPort = freePort();
  const stopTarget = await workload.target(targetPort, dir);
  try {
    if (!bouncer) return await workload.measure({ port: targetPort, pid: null, seconds, dir });
    const listenPort = freePort();
    const running = await bouncer.start(listenPort, targetPort, dir);
    try {
      await waitForListen(listenPort);
      return await workload.measure({ port: listenPort, pid: running.pid, seconds, dir });
    } finally {
      await running.stop();
    }
  } finally {
    await stopTarget();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Time from spawning `bouncer` until its TCP port accepts. */
async function measureStartOnce(bouncer: Bouncer): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "portbounce-bench-start-" });
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const conn of target) conn.close();
  })().catch(() => {});
  const listenPort = freePort();
  try {
    const started = performance.now();
    const running = await bouncer.start(listenPort, target.addr.port, dir);
    try {
      await waitForListen(listenPort);
      return performance.now() - started;
    } finally {
      await running.stop();
    }
  } finally {
    target.close();
    await accepting;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function applies(workload: Workload, bouncer: Bouncer): boolean {
  if (workload.skip?.[bouncer.name]) return false;
  return workload.protocol === "tcp" ? bouncer.tcp : bouncer.udp;
}

for (const workload of workloads) {
  for (const bouncer of bouncers) {
    const why = workload.skip?.[bouncer.name];
    if (why) notes.push(`${workload.id}: ${bouncer.name} not measured: ${why}`);
  }
}

if (previous) Object.assign(samples, previous.samples);
for (let round = 0; round < (previous ? 0 : rounds); round++) {
  // Rotate who goes first, so no bouncer always runs on a cold or a warm box.
  const order = [
    ...bouncers.slice(round % bouncers.length),
    ...bouncers.slice(0, round % bouncers.length),
  ];
  for (const workload of workloads) {
    const runs: (Bouncer | null)[] = [
      ...(workload.direct ? [null] : []),
      ...order.filter((b) => applies(workload, b)),
    ];
    for (const bouncer of runs) {
      const name = bouncer?.name ?? "direct";
      try {
        const figures = await measureOnce(workload, bouncer);
        for (const [id, value] of Object.entries(figures)) {
          record(id, name, value);
          console.error(
            `round ${round + 1}/${rounds} ${id} ${name}: ${value.toFixed(2)} ${workload.unit}`,
          );
        }
      } catch (error) {
        console.error(
          `round ${round + 1}/${rounds} ${workload.id} ${name}: failed: ${
            (error as Error).message
          }`,
        );
      }
    }
  }
  if (measureStart) {
    for (const bouncer of order) {
      const value = await measureStartOnce(bouncer);
      record("start", bouncer.name, value);
      console.error(`round ${round + 1}/${rounds} start ${bouncer.name}: ${value.toFixed(1)} ms`);
    }
  }
}

async function version(
  command: string,
  args: string[],
  pattern: RegExp,
): Promise<string | undefined> {
  try {
    // Some print their version on stderr (nginx -v), some exit non-zero doing it.
    const result = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
    return pattern.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

const cpu =
  /model name\s*:\s*(.*)/.exec(await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))?.[1] ??
    "unknown CPU";
const kernel = (await output("uname", ["-r"]).catch(() => "")).trim();
const versions: Record<string, string> = { deno: Deno.version.deno };
for (
  const [name, command, args, pattern] of [
    ["haproxy", "haproxy", ["-v"], /version (\S+)/],
    ["nginx", "nginx", ["-v"], /nginx\/(\S+)/],
    ["rinetd", "rinetd", ["-v"], /rinetd (\S+)/],
    ["redir", "redir", ["--version"], /^v?(\d[\w.]*)/m],
    ["socat", "socat", ["-V"], /socat version (\S+)/],
    ["iperf3", "iperf3", ["--version"], /iperf (\S+)/],
    ["wrk", "wrk", ["--version"], /wrk (\d[\w.-]*)/],
  ] as const
) {
  const found = await version(command, [...args], pattern);
  if (found) versions[name] = found;
}
const info: RunInfo = {
  date: previous?.info.date ?? new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
  machine: `${navigator.hardwareConcurrency} cores, ${cpu}, Linux ${kernel}`,
  versions,
  rounds: previous?.info.rounds ?? rounds,
  seconds: previous?.info.seconds ?? seconds,
  notes: [
    "portbounce runs from source (`deno run` with the flags of `deno task portbounce`), per-session logging off like the peers'.",
    "portbounce-2w: the same with `--workers 2` (TCP only; UDP stays on the main isolate). deno-floor and deno-floor-2w: bench/tools/deno_floor.ts, the smallest correct Deno relay, with one and two isolates, Deno's default flags.",
    "realm (Rust) and gost (Go) are not measured: neither is a Debian package, and this machine reaches only Debian's packages and the npm registry (no crates.io, no GitHub releases).",
    "Peer configurations: bench/peers/ (haproxy mode tcp with default threads; nginx stream with auto workers; rinetd, redir and socat as their manuals show).",
    ...notes,
  ],
};
const reported: ReportedWorkload[] = [
  ...workloads.flatMap((w) => w.rows?.map((row) => ({ ...row, protocol: w.protocol })) ?? [w]),
  ...(measureStart ? [START] : []),
];
const names = bouncers.map((b) => b.name);
await Deno.mkdir(outDir, { recursive: true });
const markdown = renderMarkdown(info, reported, names, samples, FLOOR_OF);
await Deno.writeTextFile(`${outDir}/latest.md`, markdown);
await Deno.writeTextFile(
  `${outDir}/latest.json`,
  JSON.stringify(
    {
      info,
      workloads: reported,
      bouncers: names,
      samples,
      medians: Object.fromEntries(
        Object.entries(samples).map(([w, byBouncer]) => [
          w,
          Object.fromEntries(Object.entries(byBouncer).map(([b, v]) => [b, median(v)])),
        ]),
      ),
    },
    null,
    2,
  ) + "\n",
);
await Deno.writeTextFile(
  `${outDir}/ratios.svg`,
  renderSvg(reported, names.filter((n) => !Object.values(FLOOR_OF).includes(n)), samples),
);
console.log(markdown);
console.error(`written: ${outDir}/latest.md, latest.json, ratios.svg`);
if (smoke) {
  const measured = Object.values(samples).reduce(
    (n, byBouncer) => n + Object.keys(byBouncer).length,
    0,
  );
  if (measured === 0) {
    console.error("bench smoke: nothing was measured");
    Deno.exit(1);
  }
  await Deno.remove(outDir, { recursive: true });
}
