/**
 * Short, stable descriptions of socket errors, for log lines and status:
 * "connection refused", not "Connection refused (os error 111)".
 *
 * @module
 */

/** The message of `error` without Deno's ` (os error N)` suffix. */
function plainMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/ \(os error \d+\)$/, "");
}

/** Describes an I/O error on an open socket. */
export function describeIoError(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (error instanceof Deno.errors.BrokenPipe) return "broken pipe";
  if (error instanceof Deno.errors.ConnectionAborted) return "connection aborted";
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  return plainMessage(error);
}

/** Describes why a target could not be reached. */
export function describeConnectError(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (error instanceof Deno.errors.TimedOut) return "connect timed out";
  if (error instanceof Deno.errors.AddrNotAvailable) return "address not available";
  const message = plainMessage(error);
  if (/lookup address|Name or service not known|No address associated|ENOTFOUND/i.test(message)) {
    return `cannot resolve host: ${message.replace(/^.*?: /, "")}`;
  }
  if (/unreachable/i.test(message)) return message.toLowerCase();
  return describeIoError(error);
}

/** Describes why an address could not be bound, with the usual cure. */
export function describeBindError(error: unknown, port: number): string {
  if (error instanceof Deno.errors.AddrInUse) {
    return "address already in use (another program, or another listener of these rules, holds it)";
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return "address not available: it is not an address of this host";
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return port > 0 && port < 1024
      ? "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE"
      : "permission denied";
  }
  if (error instanceof Deno.errors.NotCapable) return `not permitted: ${plainMessage(error)}`;
  return plainMessage(error);
}
