/**
 * The bouncers under test and how each is started: portbounce, and the peers
 * configured from `bench/peers/` as their own docs recommend for plain
 * forwarding. Each runs as its own process group on loopback.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { processTree, waitForTcp } from "./measure.ts";

const BENCH = fileURLToPath(new URL("./", import.meta.url));
const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** A bouncer started for one measurement. */
export interface Running {
  /** Every process of it (for RSS): the main process and its descendants. */
  readonly pid: number;
  stop(): Promise<void>;
}

/** One bouncer. */
export interface Bouncer {
  readonly name: string;
  /** Debian packages it needs (checked, never installed, by the harness). */
  readonly packages: readonly string[];
  /** Commands that must be on PATH. */
  readonly commands: readonly string[];
  readonly tcp: boolean;
  readonly udp: boolean;
  /** Starts forwarding 127.0.0.1:listen to 127.0.0.1:target (both protocols it has). */
  start(listen: number, target: number, dir: string): Promise<Running>;
}

async function template(
  name: string,
  values: Record<string, string | number>,
  dir: string,
): Promise<string> {
  let text = await Deno.readTextFile(`${BENCH}peers/${name}`);
  for (const [key, value] of Object.entries(values)) {
    text = text.replaceAll(`{{${key}}}`, String(value));
  }
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, text);
  return path;
}

/** Spawns a command in the background (output discarded). */
export function spawn(
  command: string,
  args: string[],
  options: { cwd?: string } = {},
): Deno.ChildProcess {
  return new Deno.Command(command, {
    args,
    cwd: options.cwd,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/**
 * Stops processes and everything they forked (socat's per-client processes
 * outlive their parent): SIGTERM first, since nginx's master only takes its
 * workers down on a signal it handles, then SIGKILL after 3 s.
 */
export async function stopAll(children: readonly Deno.ChildProcess[]): Promise<void> {
  const pids = (await Promise.all(children.map((child) => processTree(child.pid)))).flat();
  const signal = (name: Deno.Signal) => {
    for (const pid of pids) {
      try {
        Deno.kill(pid, name);
      } catch {
        // Already gone.
      }
    }
  };
  signal("SIGTERM");
  const timer = setTimeout(() => signal("SIGKILL"), 3_000);
  await Promise.all(children.map((child) => child.status));
  clearTimeout(timer);
}

function running(children: Deno.ChildProcess[]): Running {
  return { pid: children[0].pid, stop: () => stopAll(children) };
}

/** The flags of `deno task portbounce`, so the bench runs what users run. */
export async function portbounceFlags(): Promise<string[]> {
  const meta = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const words = (meta.tasks.portbounce as string).split(/\s+/);
  return words.slice(2, words.indexOf("main.ts"));
}

/** `deno run` arguments of `portbounce run -c config ...extra`, from source, as users run it. */
export async function portbounceRun(config: string, extra: string[] = []): Promise<string[]> {
  return ["run", ...await portbounceFlags(), `${ROOT}main.ts`, "run", "-c", config, ...extra];
}

/** portbounce on the bench rule file, with `workers` isolates accepting. */
function portbounce(name: string, workers: number): Bouncer {
  return {
    name,
    packages: [],
    commands: [],
    tcp: true,
    // UDP stays on the main isolate whatever `workers` says: measured once.
    udp: workers === 1,
    async start(listen, target, dir) {
      const config = await template("portbounce.toml", { LISTEN: listen, TARGET: target }, dir);
      return running([
        spawn(Deno.execPath(), await portbounceRun(config, ["--workers", String(workers)])),
      ]);
    },
  };
}

/** The smallest correct Deno relay (bench/tools/deno_floor.ts): what the runtime allows. */
function denoFloor(name: string, workers: number): Bouncer {
  return {
    name,
    packages: [],
    commands: [],
    tcp: true,
    udp: false,
    start(listen, target) {
      return Promise.resolve(running([
        spawn(Deno.execPath(), [
          "run",
          ...FLOOR_FLAGS,
          `${BENCH}tools/deno_floor.ts`,
          String(listen),
          String(target),
          String(workers),
        ]),
      ]));
    },
  };
}

/** The floor runs with Deno's defaults: no flags of portbounce's own. */
const FLOOR_FLAGS = ["--allow-net", "--allow-read"];

/** Each portbounce bouncer and the floor it is compared with (report.ts). */
export const FLOOR_OF: Readonly<Record<string, string>> = {
  portbounce: "deno-floor",
  "portbounce-2w": "deno-floor-2w",
};

export const BOUNCERS: readonly Bouncer[] = [
  portbounce("portbounce", 1),
  portbounce("portbounce-2w", 2),
  denoFloor("deno-floor", 1),
  denoFloor("deno-floor-2w", 2),
  {
    name: "haproxy",
    packages: ["haproxy"],
    commands: ["haproxy"],
    tcp: true,
    udp: false,
    async start(listen, target, dir) {
      const config = await template("haproxy.cfg", { LISTEN: listen, TARGET: target }, dir);
      return running([spawn("haproxy", ["-db", "-f", config])]);
    },
  },
  {
    name: "nginx",
    packages: ["nginx-light", "libnginx-mod-stream"],
    commands: ["nginx"],
    tcp: true,
    udp: true,
    async start(listen, target, dir) {
      const config = await template(
        "nginx.conf",
        { LISTEN: listen, TARGET: target, DIR: dir },
        dir,
      );
      return running([
        spawn("nginx", ["-c", config, "-p", dir, "-e", `${dir}/nginx-stream.error.log`]),
      ]);
    },
  },
  {
    name: "rinetd",
    packages: ["rinetd"],
    commands: ["rinetd"],
    tcp: true,
    udp: true,
    async start(listen, target, dir) {
      const config = await template("rinetd.conf", { LISTEN: listen, TARGET: target }, dir);
      return running([spawn("rinetd", ["-f", "-c", config])]);
    },
  },
  {
    name: "redir",
    packages: ["redir"],
    commands: ["redir"],
    tcp: true,
    udp: false,
    start(listen, target) {
      return Promise.resolve(
        running([
          spawn("redir", ["-n", "-l", "none", `127.0.0.1:${listen}`, `127.0.0.1:${target}`]),
        ]),
      );
    },
  },
  {
    name: "socat",
    packages: ["socat"],
    commands: ["socat"],
    tcp: true,
    udp: true,
    start(listen, target) {
      // socat forks a process per TCP connection and per UDP client.
      return Promise.resolve(running([
        spawn("socat", [
          `TCP-LISTEN:${listen},bind=127.0.0.1,fork,reuseaddr`,
          `TCP:127.0.0.1:${target}`,
        ]),
        spawn("socat", [
          `UDP-LISTEN:${listen},bind=127.0.0.1,fork,reuseaddr`,
          `UDP:127.0.0.1:${target}`,
        ]),
      ]));
    },
  },
];

/** Whether a command is on PATH. */
export async function hasCommand(command: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("sh", {
      args: ["-c", `command -v ${command}`],
      stdout: "null",
    })
      .output();
    return success;
  } catch {
    return false;
  }
}

/**
 * nginx serving a small page on `plain`, and on `proxy` the same behind a
 * PROXY header (bench/peers/nginx-feature-target.conf); resolves to its stopper.
 */
export async function startNginx(dir: string, plain: number, proxy: number) {
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/www`, { recursive: true, mode: 0o755 });
  await Deno.writeTextFile(
    `${dir}/www/index.html`,
    "<html><body>" + "portbounce ".repeat(50) + "</body></html>\n",
  );
  const text = (await Deno.readTextFile(`${BENCH}peers/nginx-feature-target.conf`))
    .replaceAll("{{TARGET}}", String(plain))
    .replaceAll("{{PROXY_TARGET}}", String(proxy))
    .replaceAll("{{DIR}}", dir);
  await Deno.writeTextFile(`${dir}/nginx.conf`, text);
  const child = spawn("nginx", ["-c", `${dir}/nginx.conf`, "-p", dir, "-e", `${dir}/error.log`]);
  await waitForTcp(plain);
  return () => stopAll([child]);
}
