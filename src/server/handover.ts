/**
 * The hand-over socket: how `run --takeover` reaches the running instance.
 *
 * An instance started with a pid file listens on a Unix socket beside it
 * (`PIDFILE.sock`, mode 0600: only its own user reaches it). A new instance
 * started with `--takeover` connects, asks to take over and learns which
 * listeners the running one holds; binds what it can beside them; then asks it
 * to release. The running instance stops accepting, lets go of every port
 * (its TCP sessions drain), removes its socket and answers; the new one binds
 * the rest and takes the pid file and the socket. If the new one goes away
 * before asking to release, the running one carries on untouched. One
 * takeover at a time: a second is refused while one is under way.
 *
 * No signal is sent: signalling another process would need Deno's
 * `--allow-run`, which would let portbounce start any program.
 *
 * The protocol is one JSON object per line, each side's message at most
 * {@linkcode MAX_MESSAGE_BYTES}.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatDuration } from "../config/duration.ts";
import { serveLoop } from "../relay/serve_loop.ts";
import { sleep } from "../relay/timers.ts";

/** The hand-over socket of an instance whose pid file is `pidFile`. */
export function handoverPath(pidFile: string): string {
  return `${pidFile}.sock`;
}

/** A Unix socket path holds at most 107 bytes (108 with its NUL) on Linux. */
const MAX_SOCKET_PATH_BYTES = 107;
const MAX_MESSAGE_BYTES = 64 * 1024;
/** How long either side waits for an answer it expects at once. */
export const ANSWER_TIMEOUT_MS = 5_000;
/**
 * How long a takeover may take between its request and the release (binding
 * many listeners and starting workers beside the running instance).
 */
const TAKEOVER_PATIENCE_MS = 120_000;

/** What a running instance tells whoever asks. */
export interface InstanceFacts {
  readonly pid: number;
  /** Keys of the listeners it holds (`tcp 127.0.0.1:80`). */
  readonly listeners: readonly string[];
  /** `ip:port` of its status endpoint, or null. */
  readonly status: string | null;
}

type Request = { t: "who" } | { t: "takeover"; pid: number } | { t: "release" };
type Reply =
  | { t: "instance"; facts: InstanceFacts }
  | { t: "refused"; why: string }
  | { t: "released" };

/** What the running instance does for a takeover. */
export interface HandoverActions {
  facts(): InstanceFacts;
  /** Why no takeover can be accepted now (stopping), or null. */
  refusal(): string | null;
  /** Stops accepting and lets go of every port; resolves once they are free. */
  release(newPid: number): Promise<void>;
}

/** Reads one JSON line from `conn`; null at the end, on timeout or on a bad message. */
class LineReader {
  #pending = new Uint8Array(0);
  readonly #decoder = new TextDecoder();

  constructor(readonly conn: Deno.Conn) {}

  async next<T>(timeoutMs: number): Promise<T | null> {
    const timer = new AbortController();
    const line = await Promise.race([
      this.#line(),
      sleep(timeoutMs, timer.signal).then(() => null),
    ]).finally(() => timer.abort());
    if (line === null) return null;
    try {
      return JSON.parse(line) as T;
    } catch {
      return null;
    }
  }

  async #line(): Promise<string | null> {
    const chunk = new Uint8Array(4096);
    for (;;) {
      const end = this.#pending.indexOf(0x0a);
      if (end >= 0) {
        const line = this.#decoder.decode(this.#pending.subarray(0, end));
        this.#pending = this.#pending.slice(end + 1);
        return line;
      }
      if (this.#pending.length > MAX_MESSAGE_BYTES) return null;
      const read = await this.conn.read(chunk).catch(() => null);
      if (read === null) return null;
      const joined = new Uint8Array(this.#pending.length + read);
      joined.set(this.#pending);
      joined.set(chunk.subarray(0, read), this.#pending.length);
      this.#pending = joined;
    }
  }
}

async function send(conn: Deno.Conn, message: Request | Reply): Promise<boolean> {
  try {
    const bytes = new TextEncoder().encode(JSON.stringify(message) + "\n");
    for (let written = 0; written < bytes.length;) {
      written += await conn.write(bytes.subarray(written));
    }
    return true;
  } catch {
    return false;
  }
}

function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Already closed.
  }
}

/** Why `path` cannot be a Unix socket, or null. */
export function socketPathProblem(path: string): string | null {
  const bytes = new TextEncoder().encode(path).length;
  return bytes > MAX_SOCKET_PATH_BYTES
    ? `the hand-over socket ${path} is ${bytes} bytes long; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}: use a shorter pid file path`
    : null;
}

/** The running instance's end: answers `who` and takeovers. */
export class HandoverPoint {
  #busyWith: number | undefined;
  #closed = false;

  private constructor(
    readonly path: string,
    readonly listener: Deno.Listener,
    readonly actions: HandoverActions,
    readonly log: Logger,
  ) {}

  /**
   * Listens at `path`. A socket left there by an instance that ended without
   * removing it is replaced; one that answers means an instance runs:
   * `{ running: pid }`.
   */
  static async open(
    path: string,
    actions: HandoverActions,
    log: Logger,
  ): Promise<HandoverPoint | { running: number } | { error: string }> {
    const tooLong = socketPathProblem(path);
    if (tooLong) return { error: tooLong };
    let listener: Deno.Listener;
    try {
      listener = Deno.listen({ transport: "unix", path });
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) {
        return {
          error: `cannot listen on the hand-over socket ${path}: ${(error as Error).message}`,
        };
      }
      const asked = await askWho(path);
      if ("facts" in asked) return { running: asked.facts.pid };
      try {
        await Deno.remove(path);
        listener = Deno.listen({ transport: "unix", path });
      } catch (again) {
        return {
          error: `cannot listen on the hand-over socket ${path}: ${(again as Error).message}`,
        };
      }
    }
    try {
      await Deno.chmod(path, 0o600);
    } catch {
      // Not on every system (Windows); the directory's permissions still apply.
    }
    const point = new HandoverPoint(path, listener, actions, log);
    serveLoop(() => listener.accept(), (conn) => void point.#answer(conn), {
      closed: () => point.#closed,
      failing: (error) =>
        log.warn("hand-over socket: accept failed: {error}", { error: String(error) }),
      recovered: () => {},
    });
    return point;
  }

  /** Stops listening; the socket file goes with it. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.listener);
  }

  async #answer(conn: Deno.Conn): Promise<void> {
    const reader = new LineReader(conn);
    try {
      const request = await reader.next<Request>(ANSWER_TIMEOUT_MS);
      if (request?.t === "who") {
        await send(conn, { t: "instance", facts: this.actions.facts() });
        return;
      }
      if (request?.t !== "takeover" || !Number.isSafeInteger(request.pid)) return;
      const refusal = this.#busyWith !== undefined
        ? `a takeover by process ${this.#busyWith} is under way`
        : this.actions.refusal();
      if (refusal !== null) {
        await send(conn, { t: "refused", why: refusal });
        return;
      }
      const newPid = request.pid;
      this.#busyWith = newPid;
      this.log.info("takeover: process {pid} is starting beside this one", { pid: newPid });
      if (!await send(conn, { t: "instance", facts: this.actions.facts() })) {
        return this.#abandoned(newPid, "it went away");
      }
      const next = await reader.next<Request>(TAKEOVER_PATIENCE_MS);
      if (next?.t !== "release") {
        return this.#abandoned(
          newPid,
          next === null
            ? `it went away or did not ask to release within ${
              formatDuration(TAKEOVER_PATIENCE_MS)
            }`
            : "it asked something else",
        );
      }
      // The socket goes first: the new instance listens at this path next.
      this.close();
      await this.actions.release(newPid);
      await send(conn, { t: "released" });
    } finally {
      closeQuietly(conn);
    }
  }

  #abandoned(pid: number, why: string): void {
    this.#busyWith = undefined;
    this.log.warn("takeover by process {pid} abandoned ({why}); running on unchanged", {
      pid,
      why,
    });
  }
}

async function connect(path: string): Promise<Deno.Conn | { error: unknown }> {
  try {
    return await Deno.connect({ transport: "unix", path });
  } catch (error) {
    return { error };
  }
}

/** Asks whoever listens at `path` who it is. */
export async function askWho(path: string): Promise<{ facts: InstanceFacts } | { error: unknown }> {
  const conn = await connect(path);
  if ("error" in conn) return conn;
  try {
    await send(conn, { t: "who" });
    const reply = await new LineReader(conn).next<Reply>(ANSWER_TIMEOUT_MS);
    return reply?.t === "instance" ? { facts: reply.facts } : { error: new Error("no answer") };
  } finally {
    closeQuietly(conn);
  }
}

/** A takeover under way: the running instance waits for `release`. */
export class Takeover {
  constructor(
    readonly running: InstanceFacts,
    readonly conn: Deno.Conn,
    readonly reader: LineReader,
  ) {}

  /** Asks the running instance to let go of its ports; resolves once it has. */
  async release(): Promise<boolean> {
    if (!await send(this.conn, { t: "release" })) return false;
    // Letting go of many listeners, or UDP flows, can take a moment.
    const reply = await this.reader.next<Reply>(TAKEOVER_PATIENCE_MS);
    closeQuietly(this.conn);
    return reply?.t === "released";
  }

  /** Gives up: the running instance carries on untouched. */
  abandon(): void {
    closeQuietly(this.conn);
  }
}

/** The outcome of looking for the instance a takeover replaces. */
export type TakeoverContact =
  /** No instance: start as usual. */
  | { readonly kind: "none"; readonly why: string }
  | { readonly kind: "refused"; readonly why: string }
  | { readonly kind: "found"; readonly takeover: Takeover };

/** Finds the instance named by `pidFile` and asks it to let this process take over. */
export async function requestTakeover(pidFile: string): Promise<TakeoverContact> {
  let text: string;
  try {
    text = await Deno.readTextFile(pidFile);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return { kind: "none", why: `no pid file at ${pidFile}` };
    }
    return {
      kind: "refused",
      why: `cannot read the pid file ${pidFile}: ${(error as Error).message}`,
    };
  }
  const pid = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(pid) || pid <= 0) {
    return { kind: "refused", why: `the pid file ${pidFile} holds no process id` };
  }
  const path = handoverPath(pidFile);
  const tooLong = socketPathProblem(path);
  if (tooLong) return { kind: "refused", why: tooLong };
  const conn = await connect(path);
  if ("error" in conn) {
    const { error } = conn;
    const why = error instanceof Deno.errors.NotFound
      ? `process ${pid} (pid file ${pidFile}) does not answer at ${path}: it is not running, or is not a portbounce that can hand over (another program, or an earlier portbounce); if it is gone, remove ${pidFile} and start without --takeover`
      : error instanceof Deno.errors.ConnectionRefused
      ? `process ${pid} (pid file ${pidFile}) is not running: nothing listens at ${path} any more (it ended without cleaning up); remove ${pidFile} and ${path}, then start without --takeover`
      : `cannot reach process ${pid} at ${path}: ${(error as Error).message}`;
    return { kind: "refused", why };
  }
  const reader = new LineReader(conn);
  const refuse = (why: string): TakeoverContact => {
    closeQuietly(conn);
    return { kind: "refused", why };
  };
  if (!await send(conn, { t: "takeover", pid: Deno.pid })) {
    return refuse(`process ${pid} closed ${path} at once`);
  }
  const reply = await reader.next<Reply>(ANSWER_TIMEOUT_MS);
  if (reply === null) {
    return refuse(
      `process ${pid} did not answer at ${path} within ${formatDuration(ANSWER_TIMEOUT_MS)}`,
    );
  }
  if (reply.t === "refused") return refuse(`process ${pid} refused: ${reply.why}`);
  if (reply.t !== "instance") return refuse(`process ${pid} answered something else`);
  if (reply.facts.pid !== pid) {
    return refuse(
      `the pid file ${pidFile} names process ${pid}, but the portbounce answering at ${path} is process ${reply.facts.pid}`,
    );
  }
  return { kind: "found", takeover: new Takeover(reply.facts, conn, reader) };
}
