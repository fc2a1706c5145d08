/**
 * The ready file: written once every listener is bound, so CI scripts can wait
 * for it instead of sleeping. Written atomically (a temporary file renamed into
 * place) so a reader never sees half of it; the pid file, the state file and
 * `retire` write their files the same way.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { formatAddress } from "../config/endpoint.ts";
import type { BoundAddress } from "../server/engine.ts";

/** The ready file's JSON. */
export interface ReadyFileContents {
  readonly pid: number;
  readonly listeners: readonly {
    readonly protocol: "tcp" | "udp";
    /** As planned, e.g. `tcp 127.0.0.1:0`. */
    readonly key: string;
    /** As bound, e.g. `127.0.0.1:40125`. */
    readonly address: string;
    readonly port: number;
  }[];
  /** `ip:port` of the status endpoint, or null when it is off. */
  readonly status: string | null;
}

/** Writes the ready file atomically. */
export async function writeReadyFile(
  path: string,
  bound: readonly BoundAddress[],
  status: string | null,
): Promise<void> {
  const contents: ReadyFileContents = {
    pid: Deno.pid,
    listeners: bound.map((b) => ({
      protocol: b.protocol,
      key: b.key,
      address: formatAddress(b.address, b.port),
      port: b.port,
    })),
    status,
  };
  await writeAtomically(path, JSON.stringify(contents, null, 2) + "\n");
}

/** What else an atomic write keeps of the file it replaces. */
export interface AtomicWriteOptions {
  /** Permission bits (the umask is not applied); by default the process's usual ones. */
  readonly mode?: number;
  /** Owner and group, where this user may give them (root may; others own what they write). */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/**
 * Writes `data` to `path` atomically and durably: a temporary file beside
 * it, written whole, synced, renamed into place. A reader sees the old file
 * or the new one, never half of either, and a crash never leaves half.
 */
export async function writeAtomically(
  path: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const temporary = join(dirname(path), `.${crypto.randomUUID()}.tmp`);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  try {
    {
      using file = await Deno.open(temporary, {
        write: true,
        createNew: true,
        mode: options.mode ?? 0o666,
      });
      for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
      await file.sync();
    }
    if (options.mode !== undefined) await Deno.chmod(temporary, options.mode & 0o7777);
    if (options.owner) {
      await Deno.chown(temporary, options.owner.uid, options.owner.gid).catch(() => {});
    }
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

/** `20261206T094512Z`: now, for names of files set beside another (backups, set aside). */
export function fileStamp(now = new Date()): string {
  return now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/**
 * Removes the ready file if it names this process, so a stale one never
 * announces a stopped bouncer (and one a takeover's new instance wrote stays).
 * Synchronous: it also runs as the process ends on an uncaught error.
 */
export function removeOwnReadyFile(path: string): void {
  removeIfOwn(path, (text) => {
    try {
      return Number((JSON.parse(text) as { pid?: unknown }).pid);
    } catch {
      return NaN;
    }
  });
}

/** Removes the pid file if it names this process (see {@linkcode removeOwnReadyFile}). */
export function removeOwnPidFile(path: string): void {
  removeIfOwn(path, Number);
}

function removeIfOwn(path: string, pidOf: (text: string) => number): void {
  try {
    if (pidOf(Deno.readTextFileSync(path).trim()) === Deno.pid) Deno.removeSync(path);
  } catch {
    // Gone already, or not a file of ours.
  }
}
