/**
 * What a plan costs the host before the first session: descriptors and
 * memory of its listeners, and the warnings `check` gives when that passes
 * the usual limits. Deno cannot read the descriptor limit itself (it refuses
 * `/proc/self/limits` without `--allow-all`), so the limits compared with are
 * the common defaults. Pure.
 *
 * Figures measured on Deno 2.9.6, Linux x86_64 (docs/PLATFORM.md): an idle TCP
 * listener ~7.8 KiB; a UDP listener ~62.8 KiB, the 64 KiB receive buffer its
 * pending receive holds; portbounce with one listener: 26 descriptors (standard
 * streams, the runtime's caches and event loop, the SIGUSR1 guard) and 55 MiB.
 *
 * @module
 */
import type { ListenerPlan } from "./plan.ts";

/** Memory of one idle TCP listener (bytes). */
export const TCP_LISTENER_BYTES = 8 * 1024;
/** Memory of one idle UDP listener (bytes): its receive buffer. */
export const UDP_LISTENER_BYTES = 63 * 1024;
/** Descriptors the process holds before any listener. */
export const BASE_DESCRIPTORS = 25;
/** The process itself with one listener (bytes of RSS). */
export const RUNTIME_BYTES = 55 * 1024 * 1024;
/** The usual default limit of open files (`ulimit -n`), and the systemd unit's `LimitNOFILE`. */
export const USUAL_LIMITS = [1_024, 65_536] as const;

/** What a plan's listeners cost before any session. */
export interface ListenerCosts {
  readonly tcp: number;
  readonly udp: number;
  /** Descriptors before any session (each TCP session adds 2, each UDP flow 1). */
  readonly descriptors: number;
  /** Resident memory before any session, estimated (bytes). */
  readonly memoryBytes: number;
}

/**
 * The costs of serving `listeners` (plus the status endpoint when there is
 * one) with `isolates` accepting TCP connections: each isolate binds its own
 * socket for every TCP listener (SO_REUSEPORT), and all are one process.
 * The memory of the extra isolates' runtimes is not included.
 */
export function listenerCosts(
  listeners: readonly ListenerPlan[],
  statusEndpoint = false,
  isolates = 1,
): ListenerCosts {
  const tcp = listeners.filter((l) => l.protocol === "tcp").length;
  const udp = listeners.length - tcp;
  return {
    tcp,
    udp,
    descriptors: BASE_DESCRIPTORS + tcp * isolates + udp + (statusEndpoint ? 1 : 0),
    memoryBytes: RUNTIME_BYTES + tcp * isolates * TCP_LISTENER_BYTES + udp * UDP_LISTENER_BYTES,
  };
}

/** How many isolates `[server] workers` asks for on this host ("auto": one per core). */
export function isolatesAsked(workers: number | "auto", cores: number): number {
  return workers === "auto" ? Math.max(1, cores) : workers;
}

/** Warnings when the listeners alone pass a usual descriptor limit. */
export function costWarnings(costs: ListenerCosts): string[] {
  const [usual, unit] = USUAL_LIMITS;
  if (costs.descriptors > unit) {
    return [
      `the listeners alone need ${costs.descriptors} open files, more than ${unit} (the systemd ` +
      `unit's LimitNOFILE): run cannot bind them all unless the limit is raised; split the rule ` +
      `file or use fewer ports`,
    ];
  }
  if (costs.descriptors > usual) {
    return [
      `the listeners alone need ${costs.descriptors} open files, more than the usual default ` +
      `limit of ${usual}: raise it (ulimit -n; LimitNOFILE= under systemd, which the unit sets to ` +
      `${unit}), with room for sessions (2 open files per TCP session, 1 per UDP flow)`,
    ];
  }
  return [];
}
