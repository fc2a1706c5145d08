/**
 * The hand-over socket: how `run --takeover` reaches the running instance.
 *
 * An instance started with a pid file listens on a Unix socket beside it,
 * named after its process id (`PIDFILE.PID.sock`, mode 0600: only its own
 * user reaches it; one name per process, so no instance ever removes
 * another's). A new instance started with `--takeover` reads the pid file,
 * connects, asks to take over and learns which ports the running one holds;
 * binds what it can beside them; then asks it to release. The running
 * instance stops accepting, lets go of every port (its TCP sessions drain),
 * gives up the pid and ready files and answers; the new one binds the rest
 * and writes them. If the new one goes away before asking to release, the
 * running one carries on untouched. One takeover at a time: a second is
 * refused while one is under way. A stopping (draining) instance can be
 * taken over too: it lets go of what it still holds (UDP sockets kept for
 * its flows, the status endpoint).
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
import { within } from "../relay/timers.ts";

/** The hand-over socket of process `pid`, whose pid file is `pidFile`. */
export function handoverPath(pidFile: string, pid: number): string {
  return `${pidFile}.${pid}.sock`;
}

/** A Unix socket path holds at most 107 bytes (108 with its NUL) on Linux. */
const MAX_SOCKET_PATH_BYTES = 107;
const MAX_MESSAGE_BYTES = 64 * 1024;
/** How long either side waits for an answer it expects at once. */
const ANSWER_TIMEOUT_MS = 5_000;
/**
 * How long a takeover may take between its request and the release (binding
 * many listeners and starting workers beside the running instance).
 */
const TAKEOVER_PATIENCE_MS = 30_000;
/** Connections answered at once; more wait in the kernel's queue. */
const MAX_CONNECTIONS = 8;

/** What a running instance tells whoever asks. */
export interface InstanceFacts {
  readonly pid: number;
  /** Whether it is stopping: it accepts no more, and holds its ports not for long. */
  readonly stopping: boolean;
  /** The addresses of the relay listeners it holds, as bound. */
  readonly listeners: readonly HeldAddress[];
  /** Its status endpoint's address, or null. */
  readonly status: HeldAddress | null;
}

/** An address a running instance holds. */
export interface HeldAddress {
  readonly protocol: "tcp" | "udp";
  readonly address: string;
  readonly port: number;
}

const WILDCARDS = new Set(["0.0.0.0", "::", "*"]);

/**
 * Whether binding `wanted` would meet `held`: same protocol and port, and the
 * same address or a wildcard on either side (the kernel refuses those to
 * anyone but a sharer).
 */
export function overlaps(held: HeldAddress, wanted: HeldAddress): boolean {
  return held.protocol === wanted.protocol && held.port === wanted.port &&
    (held.address === wanted.address || WILDCARDS.has(held.address) ||
      WILDCARDS.has(wanted.address));
}

type Request =
  | { t: "who" }
  | { t: "takeover"; pid: number }
  | { t: "release" }
  | { t: "reload" };
type Reply =
  | { t: "instance"; facts: InstanceFacts }
  | { t: "refused"; why: string }
  | { t: "released" }
  | { t: "reloaded"; report: ReloadOutcome };

/** What came of a reload asked over the socket (`portbounce retire`). */
export interface ReloadOutcome {
  readonly result: "applied" | "partly applied" | "refused";
  /** The reload line when applied (sessions draining); what was wrong otherwise. */
  readonly summary: string;
  readonly problems: readonly string[];
}

/** How long a reload asked over the socket may take (a large rule file, a reload before it). */
const RELOAD_PATIENCE_MS = 60_000;

/** What the running instance does for a takeover. */
export interface HandoverActions {
  facts(): InstanceFacts;
  /**
   * Stops accepting, lets go of every port and gives up the pid and ready
   * files; resolves once the new instance may bind and write them.
   */
  release(newPid: number): Promise<void>;
  /** Reloads the rule file, as SIGHUP does; resolves to what came of it. */
  reload(): Promise<ReloadOutcome>;
}

/** Reads one JSON line from `conn`; null at the end, on timeout or on a bad message. */
class LineReader {
  #pending = new Uint8Array(0);
  readonly #decoder = new TextDecoder();

  constructor(readonly conn: Deno.Conn) {}

  async next<T>(timeoutMs: number): Promise<T | null> {
    const line = await within(this.#line(), timeoutMs, () => null);
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
function socketPathProblem(path: string): string | null {
  const bytes = new TextEncoder().encode(path).length;
  return bytes > MAX_SOCKET_PATH_BYTES
    ? `the hand-over socket ${path} is ${bytes} bytes long; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}: use a shorter pid file path`
    : null;
}

/** The running instance's end: answers `who` and takeovers. */
export class HandoverPoint {
  #busyWith: number | undefined;
  #closed = false;
  readonly #loop: Promise<void>;
  /** Answers being given: closing waits for them (a "released" must reach the new instance). */
  readonly #answering = new Set<Promise<void>>();
  /** Wakes the accept loop waiting for a free slot. */
  #slotFreed: (() => void) | undefined;
  /** Connections open, and the one a release is being answered on (closing spares it). */
  readonly #conns = new Set<Deno.Conn>();
  #releasing: Deno.Conn | undefined;

  private constructor(
    readonly path: string,
    readonly listener: Deno.Listener,
    readonly actions: HandoverActions,
    readonly log: Logger,
  ) {
    this.#loop = serveLoop(() => listener.accept(), (conn) => {
      const answer = this.#answer(conn).finally(() => {
        this.#answering.delete(answer);
        this.#slotFreed?.();
      });
      this.#answering.add(answer);
      // At most MAX_CONNECTIONS at once: accept again once one is done.
      if (this.#answering.size >= MAX_CONNECTIONS) {
        return new Promise<void>((resolve) => this.#slotFreed = resolve);
      }
    }, {
      closed: () => this.#closed,
      failing: (error) =>
        log.warn("hand-over socket: accept failed: {error}", { error: String(error) }),
      recovered: () => {},
    });
  }

  /**
   * Listens at `path`. A socket left there by an earlier process of the same
   * id (the pid file's directory survived a reboot) is replaced; one that
   * answers means that process runs: `{ running: pid }`.
   */
  static async open(
    path: string,
    actions: HandoverActions,
    log: Logger,
  ): Promise<HandoverPoint | { running: number } | { error: string }> {
    const tooLong = socketPathProblem(path);
    if (tooLong) return { error: tooLong };
    const cannot = (error: unknown) => ({
      error: `cannot listen on the hand-over socket ${path}: ${(error as Error).message}`,
    });
    let listener: Deno.Listener;
    try {
      listener = Deno.listen({ transport: "unix", path });
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) return cannot(error);
      const asked = await askWho(path);
      if ("facts" in asked) return { running: asked.facts.pid };
      try {
        // A socket nobody answers on, never anything else.
        if (!(await Deno.lstat(path)).isSocket) {
          return { error: `${path} is in the way of the hand-over socket: not a socket` };
        }
        await Deno.remove(path);
        listener = Deno.listen({ transport: "unix", path });
      } catch (again) {
        return cannot(again);
      }
    }
    try {
      await Deno.chmod(path, 0o600);
    } catch {
      // Not on every system; the directory's permissions still apply.
    }
    return new HandoverPoint(path, listener, actions, log);
  }

  /**
   * Stops listening; resolves once the socket (and its file) is gone and a
   * hand-over under way has been answered. Other connections are dropped.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      closeQuietly(this.listener);
      this.#slotFreed?.();
      for (const conn of this.#conns) if (conn !== this.#releasing) closeQuietly(conn);
    }
    await this.#loop;
    await Promise.all([...this.#answering]);
  }

  async #answer(conn: Deno.Conn): Promise<void> {
    const reader = new LineReader(conn);
    this.#conns.add(conn);
    try {
      const request = await reader.next<Request>(ANSWER_TIMEOUT_MS);
      if (request?.t === "who") {
        await send(conn, { t: "instance", facts: this.actions.facts() });
        return;
      }
      if (request?.t === "reload") {
        this.log.info("reload asked on {path}", { path: this.path });
        await send(conn, { t: "reloaded", report: await this.actions.reload() });
        return;
      }
      if (request?.t !== "takeover" || !Number.isSafeInteger(request.pid)) return;
      if (this.#busyWith !== undefined) {
        await send(conn, {
          t: "refused",
          why: `a takeover by process ${this.#busyWith} is under way`,
        });
        return;
      }
      const facts = this.actions.facts();
      const newPid = request.pid;
      this.#busyWith = newPid;
      this.log.info("takeover: process {pid} is starting beside this one", { pid: newPid });
      if (!await send(conn, { t: "instance", facts })) {
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
      this.#releasing = conn;
      await this.actions.release(newPid);
      await send(conn, { t: "released" });
    } finally {
      this.#conns.delete(conn);
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
async function askWho(path: string): Promise<{ facts: InstanceFacts } | { error: unknown }> {
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

/** The process id in the pid file: a number, null when there is no file, or why it is unusable. */
async function readPidFile(pidFile: string): Promise<number | null | { problem: string }> {
  let text: string;
  try {
    text = await Deno.readTextFile(pidFile);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    return { problem: `cannot read the pid file ${pidFile}: ${(error as Error).message}` };
  }
  const pid = Number(text.trim());
  return /^\d+$/.test(text.trim()) && Number.isSafeInteger(pid) && pid > 0
    ? pid
    : { problem: `the pid file ${pidFile} holds no process id` };
}

/**
 * The instance the pid file names, if it runs and is not stopping (a start
 * without --takeover must not run beside it).
 */
export async function runningInstance(pidFile: string): Promise<InstanceFacts | null> {
  const pid = await readPidFile(pidFile);
  if (typeof pid !== "number") return null;
  const asked = await askWho(handoverPath(pidFile, pid));
  return "facts" in asked && !asked.facts.stopping ? asked.facts : null;
}

/**
 * Asks the instance the pid file names to reload its rule file, as SIGHUP
 * would (`portbounce retire`), and waits for what came of it. Null: no
 * instance answers there.
 */
export async function requestReload(
  pidFile: string,
): Promise<{ pid: number; report: ReloadOutcome } | { error: string } | null> {
  const pid = await readPidFile(pidFile);
  if (pid === null) return null;
  if (typeof pid !== "number") return { error: pid.problem };
  const path = handoverPath(pidFile, pid);
  const conn = await connect(path);
  if ("error" in conn) {
    const { error } = conn;
    return error instanceof Deno.errors.ConnectionRefused ||
        error instanceof Deno.errors.NotFound
      ? null
      : { error: `cannot reach process ${pid} at ${path}: ${(error as Error).message}` };
  }
  try {
    if (!await send(conn, { t: "reload" })) return { error: `process ${pid} closed ${path}` };
    const reply = await new LineReader(conn).next<Reply>(RELOAD_PATIENCE_MS);
    return reply?.t === "reloaded"
      ? { pid, report: reply.report }
      : { error: `process ${pid} did not answer the reload at ${path}` };
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
  /** No instance to take over: start as usual. */
  | { readonly kind: "none"; readonly why: string }
  | { readonly kind: "refused"; readonly why: string }
  | { readonly kind: "found"; readonly takeover: Takeover };

/** Finds the instance named by `pidFile` and asks it to let this process take over. */
export async function requestTakeover(pidFile: string): Promise<TakeoverContact> {
  const pid = await readPidFile(pidFile);
  if (pid === null) return { kind: "none", why: `no pid file at ${pidFile}` };
  if (typeof pid !== "number") return { kind: "refused", why: pid.problem };
  const path = handoverPath(pidFile, pid);
  const tooLong = socketPathProblem(path);
  if (tooLong) return { kind: "refused", why: tooLong };
  const conn = await connect(path);
  if ("error" in conn) {
    const { error } = conn;
    if (error instanceof Deno.errors.ConnectionRefused) {
      // Its socket is left, and nobody listens: it ended without cleaning up (killed). Starting
      // as usual is safe (a port still held fails the start) and keeps a restart after a crash
      // from failing for good.
      await Deno.remove(path).catch(() => {});
      return {
        kind: "none",
        why:
          `process ${pid} of the pid file ${pidFile} is not running: it ended without removing ${path}`,
      };
    }
    const why = error instanceof Deno.errors.NotFound
      ? `process ${pid} (pid file ${pidFile}) does not answer at ${path}: it is not a portbounce that can hand over (another program, or an earlier portbounce), or it is gone; if it is gone, remove ${pidFile}`
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
