/**
 * The ready file: written once every listener is bound, so CI scripts can wait
 * for it instead of sleeping. Written atomically (a temporary file renamed into
 * place) so a reader never sees half of it.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { formatAddress } from "../config/endpoint.ts";
import type { BoundAddress } from "./engine.ts";

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

/** Writes `text` to `path` atomically: a temporary file beside it, renamed into place. */
export async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = join(dirname(path), `.${crypto.randomUUID()}.tmp`);
  await Deno.writeTextFile(temporary, text);
  try {
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
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
