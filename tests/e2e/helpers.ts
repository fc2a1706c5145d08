/**
 * End-to-end helpers: run the real CLI as a subprocess with exactly the flags
 * of `deno task portbounce`, and real servers and clients on loopback.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { ReadyFileContents } from "../../src/daemon/ready_file.ts";
import { EntryLog, type EntryLog as EntryLogType, parseEntry } from "../log_entries.ts";

export * from "../fixtures/net.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The `deno run ...` flags of the `portbounce` task in deno.json. */
export async function portbounceTaskFlags(): Promise<string[]> {
  const meta = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const words = (meta.tasks.portbounce as string).split(/\s+/);
  // "deno run FLAGS... main.ts"
  return words.slice(2, words.indexOf("main.ts"));
}

/**
 * What the end-to-end tests run: `main.ts` from source, or, with
 * `PORTBOUNCE_SCRIPT=/path/to/portbounce.js`, the single-file bundle (CI runs
 * them that way once, from an empty folder, with `PORTBOUNCE_DENO_DIR` an
 * empty Deno cache and `--cached-only`, as on a machine that has only Deno).
 */
const SCRIPT = Deno.env.get("PORTBOUNCE_SCRIPT") ?? `${ROOT}/main.ts`;
const CHILD_DENO_DIR = Deno.env.get("PORTBOUNCE_DENO_DIR");
/**
 * With `PORTBOUNCE_TEST_WORKERS=2`, every bouncer the tests start runs with
 * `--workers 2` (CI runs the reliability and reload tests so as well).
 */
const TEST_WORKERS = Deno.env.get("PORTBOUNCE_TEST_WORKERS");

/** How many isolates each bouncer the tests start runs (each has its own heap). */
export const TEST_ISOLATES = Number(TEST_WORKERS ?? 1);

/** A command running the CLI like `deno task portbounce ARGS`. */
export async function portbounceCommand(
  args: string[],
  options: {
    stdout?: "piped" | "null";
    stderr?: "piped" | "null";
    /** A command that execs the CLI: `["ip", "netns", "exec", NS]`, a `ulimit` shell. */
    wrapper?: string[];
  } = {},
): Promise<Deno.Command> {
  const command = [
    Deno.execPath(),
    "run",
    ...(CHILD_DENO_DIR ? ["--cached-only"] : []),
    ...await portbounceTaskFlags(),
    SCRIPT,
    ...args,
  ];
  const [program, ...rest] = [...(options.wrapper ?? []), ...command];
  return new Deno.Command(program, {
    args: rest,
    cwd: ROOT,
    stdin: "null",
    stdout: options.stdout ?? "piped",
    stderr: options.stderr ?? "piped",
    env: { NO_COLOR: "1", ...(CHILD_DENO_DIR ? { DENO_DIR: CHILD_DENO_DIR } : {}) },
  });
}

/** Runs the CLI to completion. */
export async function runCli(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await (await portbounceCommand(args)).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A running bouncer. */
export interface Bouncer extends AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly ready: ReadyFileContents;
  readonly dir: string;
  /** Port actually bound for the n-th listener of the ready file. */
  port(index?: number): number;
  /** Every log line so far, as text. */
  lines(): string[];
  /** The log as structured entries (the CLI runs with `--log-format json` unless told otherwise). */
  readonly log: EntryLogType;
  /** Waits until a log line matches, returning it (fails after `timeoutMs`). */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal. */
  signal(signal: Deno.Signal): void;
  /** Waits for exit; returns the code and all log output. */
  exited(): Promise<{ code: number; log: string }>;
}

/**
 * Starts `portbounce run` on `config` and waits for its ready file.
 * Rejects with the log if it exits first.
 */
export async function startBouncer(config: string, extraArgs: string[] = []): Promise<Bouncer> {
  const dir = await Deno.makeTempDir({ prefix: "portbounce-e2e-" });
  await Deno.writeTextFile(`${dir}/rules.toml`, config);
  return await startPortbounce(["run", "-c", `${dir}/rules.toml`, ...extraArgs], dir);
}

/**
 * Starts the CLI with `args` plus `--ready-file DIR/ready.json` and waits for
 * the ready file. `dir` is removed when the result is disposed.
 */
export async function startPortbounce(
  args: string[],
  dir?: string,
  wrapper?: string[],
): Promise<Bouncer> {
  dir ??= await Deno.makeTempDir({ prefix: "portbounce-e2e-" });
  const readyPath = `${dir}/ready.json`;
  const daemon = ["run", "forward"].includes(args[0]);
  const format = args.includes("--log-format") || !daemon ? [] : ["--log-format", "json"];
  const workers = TEST_WORKERS && daemon && !args.includes("--workers")
    ? ["--workers", TEST_WORKERS]
    : [];
  const process = (await portbounceCommand([
    ...args,
    ...format,
    ...workers,
    "--ready-file",
    readyPath,
  ], {
    stdout: "null",
    wrapper,
  })).spawn();

  const collected: string[] = [];
  const log = new EntryLog();
  const waiters = new Set<() => void>();
  const reading = (async () => {
    let partial = "";
    for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) {
      partial += chunk;
      const parts = partial.split("\n");
      partial = parts.pop()!;
      collected.push(...parts);
      for (const part of parts) log.add(parseEntry(part));
      for (const wake of waiters) wake();
    }
    if (partial) {
      collected.push(partial);
      log.add(parseEntry(partial));
    }
    for (const wake of waiters) wake();
  })();
  let exitStatus: Deno.CommandStatus | undefined;
  const status = process.status.then((s) => (exitStatus = s));

  const deadline = Date.now() + 20_000;
  let ready: ReadyFileContents | undefined;
  while (!ready) {
    try {
      ready = JSON.parse(await Deno.readTextFile(readyPath));
    } catch {
      if (exitStatus || Date.now() > deadline) {
        if (!exitStatus) process.kill("SIGKILL");
        await status;
        await reading;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        throw new Error(`portbounce did not become ready:\n${collected.join("\n")}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  const bouncer: Bouncer = {
    process,
    ready,
    dir,
    port: (index = 0) => ready!.listeners[index].port,
    lines: () => [...collected],
    log,
    async waitForLine(pattern, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const found = collected.find((line) => pattern.test(line));
        if (found) return found;
        if (Date.now() > end) {
          throw new Error(`no log line matched ${pattern}; log:\n${collected.join("\n")}`);
        }
        await new Promise<void>((resolve) => {
          const wake = () => {
            waiters.delete(wake);
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(wake, 50);
          waiters.add(wake);
        });
      }
    },
    signal(signal) {
      process.kill(signal);
    },
    async exited() {
      const { code } = await status;
      await reading;
      return { code, log: collected.join("\n") };
    },
    async [Symbol.asyncDispose]() {
      if (!exitStatus) {
        try {
          process.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }
      await status;
      await reading;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  return bouncer;
}

/** The port of a bouncer's status endpoint (from its ready file). */
export function statusPort(bouncer: { ready: { status: string | null } }): number {
  return Number(bouncer.ready.status!.split(":").pop());
}
