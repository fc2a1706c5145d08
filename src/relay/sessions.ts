/**
 * The live sessions of every protocol, so that shutdown and reload can drain
 * them: wait until they end by themselves, then close what is left.
 *
 * @module
 */
import type { DisconnectReason } from "../log/events.ts";

/** A live session as the registry sees it. */
export interface LiveSession {
  /** Listener key the session arrived on (`tcp 127.0.0.1:80`). */
  readonly listenerKey: string;
  /** Ends the session now, giving `reason` in its disconnect event. */
  close(reason: DisconnectReason): void;
}

/** Every live session. */
export class SessionRegistry {
  readonly #live = new Set<LiveSession>();
  #waiters: (() => void)[] = [];

  /** Number of live sessions. */
  get size(): number {
    return this.#live.size;
  }

  add(session: LiveSession): void {
    this.#live.add(session);
  }

  delete(session: LiveSession): void {
    this.#live.delete(session);
    if (this.#live.size === 0) {
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    }
  }

  /** Closes every live session (or those `where` selects) with `reason`. */
  closeAll(
    reason: DisconnectReason,
    where: (s: LiveSession) => boolean = () => true,
  ): void {
    for (const session of [...this.#live]) {
      if (where(session)) session.close(reason);
    }
  }

  /** Resolves once no session is live. */
  whenEmpty(): Promise<void> {
    if (this.#live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
