/**
 * The status endpoint: `/` (the page), `/status.json` and `/metrics`, read-only
 * (GET and HEAD only), on the address `[server] status` names.
 *
 * @module
 */
import { formatAddress } from "../config/endpoint.ts";
import { renderMetrics } from "./metrics.ts";
import { renderStatusPage } from "./page.ts";
import { buildStatusReport, type StatusInput } from "./report.ts";

/** A running status endpoint. */
export interface StatusEndpoint {
  /** `ip:port` it is bound to. */
  readonly address: string;
  close(): Promise<void>;
}

/** Answers one request from the state `input()` gives at that moment. */
export function handleStatusRequest(request: Request, input: () => StatusInput): Response {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("read-only: GET or HEAD\n", {
      status: 405,
      headers: { allow: "GET, HEAD" },
    });
  }
  const headers = { "cache-control": "no-store", "x-content-type-options": "nosniff" };
  const path = new URL(request.url).pathname;
  const state = input();
  switch (path) {
    case "/":
      return new Response(renderStatusPage(buildStatusReport(state)), {
        headers: { ...headers, "content-type": "text/html; charset=utf-8" },
      });
    case "/status.json":
      return new Response(JSON.stringify(buildStatusReport(state), null, 2) + "\n", {
        headers: { ...headers, "content-type": "application/json" },
      });
    case "/metrics":
      return new Response(renderMetrics(buildStatusReport(state), state.stats, state.startedAt), {
        headers: { ...headers, "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    default:
      return new Response("not found: try /, /status.json or /metrics\n", { status: 404, headers });
  }
}

/** Starts the endpoint; throws (like a listener) if the address cannot be bound. */
export function serveStatus(
  address: { readonly hostname: string; readonly port: number },
  input: () => StatusInput,
): StatusEndpoint {
  const server = Deno.serve(
    { hostname: address.hostname, port: address.port, onListen: () => {} },
    (request) => handleStatusRequest(request, input),
  );
  const bound = server.addr as Deno.NetAddr;
  return {
    address: formatAddress(bound.hostname, bound.port),
    close: () => server.shutdown(),
  };
}
