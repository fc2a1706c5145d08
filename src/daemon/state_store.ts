/**
 * The state file (`[server] state`): where the client ledger, the history
 * and each rule's first and last session are kept across restarts. Read at
 * start; written every minute and on stop, atomically (a temporary file
 * beside it, synced, renamed over it). A damaged, truncated, too large or
 * other-version state file is set aside (renamed with a suffix) with one
 * warning; a file that is not a state file at all is refused, never
 * overwritten. A write that fails is a warning and a count, never a reason
 * to stop relaying.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { join } from "node:path";
import { formatSize } from "../config/size.ts";
import type { Rule } from "../config/types.ts";
import type { Stats } from "../status/stats.ts";
import {
  decodeState,
  encodeState,
  looksLikeState,
  type RuleState,
  type SavedState,
} from "../status/state.ts";
import type { Monitor } from "../server/monitor.ts";
import { fileStamp, writeAtomically } from "./ready_file.ts";

/** The file's name when `[server] state` names a directory. */
export const STATE_FILE_NAME = "portbounce-state.json";
/**
 * State files larger than this are set aside unread (reading one costs
 * several times its size in memory); what is written is kept below it.
 */
export const MAX_STATE_BYTES = 32 * 1024 * 1024;
/** How long the write on stop may take (a hung mount must not hold the exit). */
export const STOP_WRITE_TIMEOUT_MS = 5_000;

/** What opening the state path found. */
export type OpenedState =
  | { readonly store: StateStore; readonly saved: SavedState | null }
  | { readonly refused: string };

/** The state file of one instance. */
export class StateStore {
  /** Writes that failed (for /metrics). */
  failures = 0;
  #failing = false;
  #writing = Promise.resolve();

  private constructor(readonly path: string, readonly log: Logger) {}

  /** Opens `path` (a file, or a directory to keep it in) and reads what it holds. */
  static async open(path: string, log: Logger): Promise<OpenedState> {
    let file = path;
    try {
      if ((await Deno.stat(path)).isDirectory) file = join(path, STATE_FILE_NAME);
    } catch {
      // Not there yet: the file to create.
    }
    const store = new StateStore(file, log);
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(file);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { store, saved: null };
      return { refused: `state: cannot read ${file}: ${(error as Error).message}` };
    }
    if (!info.isFile) {
      return { refused: `state: ${file} is not a regular file; name a file or a directory` };
    }
    if (info.size > MAX_STATE_BYTES) {
      // Read its start only: is it ours?
      using handle = await Deno.open(file);
      const head = new Uint8Array(64);
      const n = await handle.read(head) ?? 0;
      if (!looksLikeState(new TextDecoder().decode(head.subarray(0, n)))) {
        return { refused: notOurs(file) };
      }
      await store.#setAside(
        `${formatSize(info.size)}, more than the ${formatSize(MAX_STATE_BYTES)} read`,
      );
      return { store, saved: null };
    }
    const text = new TextDecoder().decode(await Deno.readFile(file));
    if (text.trim() === "") return { store, saved: null };
    if (!looksLikeState(text)) return { refused: notOurs(file) };
    const saved = decodeState(text);
    if ("damaged" in saved) {
      await store.#setAside(saved.damaged);
      return { store, saved: null };
    }
    return { store, saved };
  }

  /**
   * Writes `state` atomically; a failure is logged (once until a write
   * succeeds) and counted. One write at a time: while one is under way (a
   * slow disk, a hung mount), another is not queued behind it but skipped.
   */
  write(state: () => SavedState): Promise<void> {
    if (this.#busy) return this.#writing;
    this.#busy = true;
    this.#writing = this.#write(state()).finally(() => this.#busy = false);
    return this.#writing;
  }

  #busy = false;
  /** Whether the ledgers were trimmed to fit (said once). */
  #trimmed = false;

  async #write(state: SavedState): Promise<void> {
    try {
      await writeAtomically(this.path, this.#fitted(state), { mode: 0o600 });
      if (this.#failing) {
        this.#failing = false;
        this.log.info("state: writing {path} works again", { path: this.path });
      }
    } catch (error) {
      this.failures++;
      if (!this.#failing) {
        this.#failing = true;
        this.log.warn(
          "state: cannot write {path}: {error}; relaying goes on, the ledger and history are kept in memory only until it can",
          { path: this.path, error: (error as Error).message },
        );
      }
    }
  }

  /**
   * The state as bytes within {@linkcode MAX_STATE_BYTES}: when the ledgers
   * are larger, each keeps its most recently seen clients in proportion
   * (said once), so the file stays one that the next start reads.
   */
  #fitted(state: SavedState): Uint8Array {
    let bytes = new TextEncoder().encode(encodeState(state));
    for (let share = 0.9 * MAX_STATE_BYTES / bytes.length; bytes.length > MAX_STATE_BYTES;) {
      const rules = Object.fromEntries(
        Object.entries(state.rules).map(([name, rule]) => [name, {
          ...rule,
          clients: rule.clients.slice(0, Math.floor(rule.clients.length * share)),
        }]),
      );
      bytes = new TextEncoder().encode(encodeState({ ...state, rules }));
      share *= 0.8;
      if (!this.#trimmed) {
        this.#trimmed = true;
        this.log.warn(
          "state: the ledgers hold more than a state file keeps ({max}): the least recently seen clients are not kept across restarts",
          { max: formatSize(MAX_STATE_BYTES) },
        );
      }
    }
    return bytes;
  }

  /** Renames a state file that cannot be read out of the way, with one warning. */
  async #setAside(why: string): Promise<void> {
    const aside = `${this.path}.unreadable-${fileStamp()}`;
    try {
      await Deno.rename(this.path, aside);
      this.log.warn("state: {path} cannot be used ({why}); set aside as {aside}, starting empty", {
        path: this.path,
        why,
        aside,
      });
    } catch (error) {
      this.log.warn(
        "state: {path} cannot be used ({why}), nor set aside ({error}); starting empty",
        {
          path: this.path,
          why,
          error: (error as Error).message,
        },
      );
    }
  }
}

function notOurs(file: string): string {
  return `state: ${file} is not a portbounce state file, and would be overwritten: name a new file, or a directory`;
}

/** What of `engine`'s rules is kept across a restart, now. */
export function collectState(
  stats: Stats,
  monitor: Monitor,
  rules: readonly Rule[],
): SavedState {
  const kept: Record<string, RuleState> = {};
  for (const rule of rules) {
    const counters = stats.rules.get(rule.name);
    if (!counters) continue;
    kept[rule.name] = {
      firstSession: counters.firstSession,
      firstClient: counters.firstClient,
      lastSession: counters.lastSession,
      lastClient: counters.lastClient,
      clients: counters.clients?.list() ?? [],
      evicted: counters.clients?.evicted ?? 0,
    };
  }
  return { written: monitor.now(), rules: kept, history: monitor.exportHistory() };
}

/**
 * Puts back what a state file kept, for the rules and listeners in force
 * (what it holds of others is dropped): each rule's clients and first and
 * last session (its first-traffic alarm is not raised again), and history.
 */
export function restoreState(
  saved: SavedState,
  stats: Stats,
  monitor: Monitor,
  rules: readonly Rule[],
  listenerKeys: readonly string[],
): void {
  for (const rule of rules) {
    // Own keys only: a rule named "constructor" finds nothing of Object's.
    if (!Object.hasOwn(saved.rules, rule.name)) continue;
    const state = saved.rules[rule.name];
    const counters = stats.ofRule(rule.name);
    counters.clients?.restore(state.clients, state.evicted);
    if (state.firstSession !== null) {
      counters.firstSession = state.firstSession;
      counters.firstClient = state.firstClient;
      monitor.alarms.seen(rule.name);
    }
    if (state.lastSession !== null) {
      counters.lastSession = state.lastSession;
      counters.lastClient = state.lastClient;
    }
  }
  monitor.importHistory(
    saved.history,
    new Set([...rules.map((r) => `rule:${r.name}`), ...listenerKeys.map((k) => `listener:${k}`)]),
  );
}
