/**
 * Signal handling for `run`. SIGUSR1 is deliberately not used: Deno 2.9.2+
 * opens a debugger on it whatever the program does (see README).
 *
 * @module
 */

/** What each signal does. */
export interface SignalActions {
  /** SIGTERM/SIGINT; `count` is how many stop signals have arrived so far. */
  stop(signal: "SIGTERM" | "SIGINT", count: number): void;
  /** SIGHUP. */
  reload(): void;
  /** SIGUSR2. */
  status(): void;
}

/** Installs the handlers; `remove()` takes them away again. */
export function installSignalHandlers(
  actions: SignalActions,
): { remove(): void } {
  let stops = 0;
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", () => actions.stop("SIGTERM", ++stops)],
    ["SIGINT", () => actions.stop("SIGINT", ++stops)],
    ["SIGHUP", () => actions.reload()],
    ["SIGUSR2", () => actions.status()],
  ];
  for (const [signal, handler] of handlers) {
    Deno.addSignalListener(signal, handler);
  }
  return {
    remove() {
      for (const [signal, handler] of handlers) {
        Deno.removeSignalListener(signal, handler);
      }
    },
  };
}
