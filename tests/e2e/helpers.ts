/**
 * End-to-end helpers: run the real CLI as a subprocess with exactly the flags
 * of `deno task portbounce`, and real servers and clients on loopback.
 *
 * @module
 */
import { createHash } from "node:crypto";
import net from "node:net";
import { fileURLToPath } from "node:url";
import type { ReadyFileContents } from "../../src/daemon/ready_file.ts";
import { EntryLog, type EntryLog as EntryLogType, parseEntry } from "../log_entries.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

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

/** A temporary directory removed at the end of the test. */
export async function tempDir(): Promise<string & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "portbounce-test-" });
  return Object.assign(path, {
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  }) as unknown as string & AsyncDisposable;
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

/** A TCP server on loopback (a free port unless given) that runs `handle` for each connection. */
export function tcpServer(
  handle: (conn: Deno.TcpConn) => Promise<void> | void,
  hostname = "127.0.0.1",
  port = 0,
): { port: number; clients: string[] } & AsyncDisposable {
  const listener = Deno.listen({ hostname, port });
  const clients: string[] = [];
  const running = new Set<Promise<void>>();
  const loop = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      clients.push(conn.remoteAddr.hostname);
      const job = (async () => {
        try {
          await handle(conn);
        } catch {
          // The test checks outcomes at the client.
        } finally {
          try {
            conn.close();
          } catch {
            // Closed by the handler.
          }
        }
      })();
      running.add(job);
      job.finally(() => running.delete(job));
    }
  })();
  return {
    port: listener.addr.port,
    clients,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      await Promise.allSettled([...running]);
    },
  };
}

/** Echoes everything back, then half-closes after the client's EOF. */
export async function echo(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    await writeAll(conn, buffer.subarray(0, n));
  }
  await conn.closeWrite();
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let written = 0; written < data.length;) {
    written += await conn.write(data.subarray(written));
  }
}

/** Reads until EOF; returns everything. */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/** Reads until EOF, hashing as it goes; returns the SHA-256 and the byte count. */
export async function hashUntilEof(conn: Deno.Conn): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  const buffer = new Uint8Array(256 * 1024);
  let bytes = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    hash.update(buffer.subarray(0, n));
    bytes += n;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** SHA-256 of `data`, hex. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** `size` random bytes. */
export function randomBytes(size: number): Uint8Array {
  const data = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += 65_536) {
    crypto.getRandomValues(data.subarray(offset, Math.min(size, offset + 65_536)));
  }
  return data;
}

/**
 * Connects from a chosen loopback source address (127.0.0.x), which
 * `Deno.connect` cannot do, and resolves to what the server sent before closing,
 * or to an error string.
 */
export function exchangeFrom(
  localAddress: string,
  port: number,
  payload: string,
  host = "127.0.0.1",
): Promise<{ data: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localAddress });
    let data = "";
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.end(payload));
    socket.on("data", (chunk) => (data += chunk));
    socket.on("error", (error) => resolve({ data, error: error.message }));
    socket.on("close", () => resolve({ data }));
  });
}

/** Finds `count` consecutive free TCP ports on 127.0.0.1. */
export function freePortRange(count: number): number {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const held: Deno.TcpListener[] = [];
    try {
      for (let i = 0; i < count; i++) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: base + i }));
      }
      return base;
    } catch {
      // Taken: try another base.
    } finally {
      for (const listener of held) listener.close();
    }
  }
  throw new Error("no free port range");
}

/** Whether a TCP port on 127.0.0.1 can be bound right now. */
export function portIsFree(port: number, hostname = "127.0.0.1"): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    return true;
  } catch {
    return false;
  }
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A UDP socket. */
export type Udp = Deno.DatagramConn;

/** A UDP socket bound to an ephemeral port. */
export function udpSocket(hostname = "127.0.0.1"): Udp {
  return Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
}

/** The port a UDP socket is bound to. */
export function portOf(socket: Udp): number {
  return (socket.addr as Deno.NetAddr).port;
}

/** A UDP echo server; `reply` may answer from another socket to test reply filtering. */
export function udpEcho(hostname = "127.0.0.1") {
  const socket = udpSocket(hostname);
  let replyFrom: Udp = socket;
  const loop = (async () => {
    const buffer = new Uint8Array(65_536);
    for (;;) {
      try {
        const [data, from] = await socket.receive(buffer);
        await replyFrom.send(data, from);
      } catch {
        return;
      }
    }
  })();
  return {
    socket,
    port: portOf(socket),
    /** Makes replies leave from `other` instead (a non-target address for the bouncer). */
    replyFrom(other: Udp) {
      replyFrom = other;
    },
    async [Symbol.asyncDispose]() {
      socket.close();
      await loop;
    },
  };
}

/** Connects, sends `text`, half-closes, and returns everything the far side sent back. */
export async function exchange(
  port: number,
  text: string,
  hostname = "127.0.0.1",
): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await writeAll(conn, new TextEncoder().encode(text));
    await conn.closeWrite();
    return new TextDecoder().decode(await readAll(conn));
  } finally {
    conn.close();
  }
}

/** Receives one datagram, or null after `ms`. */
export async function receiveWithin(socket: Udp, ms: number): Promise<Uint8Array | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
  const received = socket.receive(new Uint8Array(65_536)).then(([data]) => data.slice());
  const result = await Promise.race([received, timeout]);
  clearTimeout(timer);
  if (result === null) received.catch(() => {}); // Left pending until the socket closes.
  return result;
}

/** Resident memory of a process, KiB. */
export async function rssKiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await Deno.readTextFile(`/proc/${pid}/status`))![1]);
}

/** Open descriptors of a process. */
export async function fdCount(pid: number): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * Sends a raw HTTP request and returns the whole answer (empty if the server
 * just closed, or said nothing within `timeoutMs`).
 */
export async function rawHttp(port: number, request: string, timeoutMs = 10_000): Promise<string> {
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    await conn.write(new TextEncoder().encode(request));
    const chunks: string[] = [];
    const buffer = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      chunks.push(new TextDecoder().decode(buffer.subarray(0, n)));
    }
    return chunks.join("");
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

/** The port of a bouncer's status endpoint (from its ready file). */
export function statusPort(bouncer: { ready: { status: string | null } }): number {
  return Number(bouncer.ready.status!.split(":").pop());
}
