/**
 * Signal handling for `run`. SIGUSR1 is deliberately not used: Deno 2.9.2+
 * opens a debugger on it whatever the program does (see docs/operations.md, "Not SIGUSR1").
 *
 * @module
 */

/** What each signal does. */
export interface SignalActions {
  /** SIGTERM/SIGINT. */
  stop(signal: "SIGTERM" | "SIGINT"): void;
  /** SIGHUP. */
  reload(): void;
  /** SIGUSR2. */
  status(): void;
}

/** Installs the handlers; `remove()` takes them away again. */
export function installSignalHandlers(
  actions: SignalActions,
): { remove(): void } {
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", () => actions.stop("SIGTERM")],
    ["SIGINT", () => actions.stop("SIGINT")],
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
