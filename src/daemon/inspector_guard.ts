/**
 * SIGUSR1 makes Deno open a V8 inspector on 127.0.0.1:9229 without any
 * authentication, whatever the program does; any local user could then run
 * code as portbounce. When the port is already taken, the inspector only
 * prints "Failed to start inspector server". So portbounce holds
 * 127.0.0.1:9229 itself while it runs, answering nothing there
 * (docs/SECURITY.md).
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { serveLoop } from "../relay/serve_loop.ts";

/** Where Deno's inspector listens on SIGUSR1. */
export const INSPECTOR_ADDRESS = { hostname: "127.0.0.1", port: 9229 } as const;
const RETRY_MS = 10_000;

/** Holds the inspector's port; `release()` lets it go. */
export class InspectorGuard {
  #listener: Deno.TcpListener | null = null;
  #retry: ReturnType<typeof setInterval> | undefined;
  #released = false;
  #warned = false;

  private constructor(readonly log: Logger) {}

  /** Takes the port now if it can, and keeps trying if another process has it. */
  static hold(log: Logger): InspectorGuard {
    const guard = new InspectorGuard(log);
    if (!guard.#take()) {
      guard.#retry = setInterval(() => {
        if (guard.#take()) clearInterval(guard.#retry);
      }, RETRY_MS);
      Deno.unrefTimer(guard.#retry);
    }
    Deno.addSignalListener("SIGUSR1", guard.#onSignal);
    return guard;
  }

  /** Whether this process holds the port. */
  get holding(): boolean {
    return this.#listener !== null;
  }

  #onSignal = () => {
    this.log.warn(
      "SIGUSR1 ignored: {why} (status is SIGUSR2)",
      {
        why: this.holding
          ? "portbounce holds 127.0.0.1:9229, so Deno's debugger cannot open"
          : "127.0.0.1:9229 is held by another process, so Deno's debugger cannot open",
      },
    );
  };

  #take(): boolean {
    if (this.#released) return true;
    try {
      this.#listener = Deno.listen(INSPECTOR_ADDRESS);
    } catch (error) {
      if (!this.#warned) {
        this.#warned = true;
        const denied = error instanceof Deno.errors.PermissionDenied ||
          error instanceof Deno.errors.NotCapable;
        this.log.info(
          "cannot hold 127.0.0.1:9229 against Deno's SIGUSR1 debugger: {why}",
          {
            why: denied
              ? "binding it is denied here, which keeps the debugger out too"
              : "another process holds it; trying again every 10s, and do not send SIGUSR1 meanwhile",
          },
        );
      }
      return false;
    }
    const listener = this.#listener;
    // Answer nothing: whoever connects is closed at once.
    serveLoop(() => listener.accept(), (conn) => {
      try {
        conn.close();
      } catch {
        // Gone already.
      }
    }, {
      closed: () => this.#released,
      failing: () => {},
      recovered: () => {},
    });
    return true;
  }

  /** Lets the port go (on exit). */
  release(): void {
    this.#released = true;
    clearInterval(this.#retry);
    Deno.removeSignalListener("SIGUSR1", this.#onSignal);
    try {
      this.#listener?.close();
    } catch {
      // Already closed.
    }
    this.#listener = null;
  }
}
