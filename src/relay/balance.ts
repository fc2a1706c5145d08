/**
 * Which target a new session tries first, and which next: `failover` (the
 * list in order), `round-robin`, `least-sessions` and `source-hash` (the same
 * client address keeps its target). Targets that are down come last, so a
 * session still tries them when nothing else is left. Pure.
 *
 * @module
 */
import type { BalanceMode } from "../config/types.ts";
import type { Target } from "../rules/plan.ts";

/** What the order depends on beyond the targets themselves. */
export interface BalanceState {
  /** Whether a target may take sessions now (up, or its back-off has passed). */
  usable(target: Target): boolean;
  /** Live sessions on a target. */
  sessions(target: Target): number;
  /** A counter that advances once per session (round-robin). */
  next(): number;
}

/** The targets in the order a new session from `client` tries them. */
export function targetOrder(
  targets: readonly Target[],
  mode: BalanceMode,
  state: BalanceState,
  client: string,
): Target[] {
  if (targets.length === 1) return [...targets];
  let order: Target[];
  switch (mode) {
    case "failover":
      order = [...targets];
      break;
    case "round-robin": {
      // Turns among the usable targets only: rotating over all of them would hand a
      // down target's turns to the one after it (twice its share).
      const usable = targets.filter((t) => state.usable(t));
      const ring = usable.length > 0 ? usable : targets;
      order = [
        ...rotate(ring, state.next() % ring.length),
        ...targets.filter((t) => !ring.includes(t)),
      ];
      break;
    }
    case "least-sessions":
      // Stable: equal counts keep list order.
      order = [...targets].sort((a, b) => state.sessions(a) - state.sessions(b));
      break;
    case "source-hash":
      order = rotate(targets, hash(client) % targets.length);
      break;
  }
  return [...order.filter((t) => state.usable(t)), ...order.filter((t) => !state.usable(t))];
}

function rotate<T>(items: readonly T[], start: number): T[] {
  return [...items.slice(start), ...items.slice(0, start)];
}

/** FNV-1a of a client address: stable across restarts and hosts. */
export function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
