/**
 * The status endpoint's HTTP server: a small HTTP/1.1 responder on its own
 * accept loop, so that it can do what `Deno.serve` cannot: survive running
 * out of descriptors (back off and serve again, like the relay listeners),
 * cap its own connections, and drop clients that do not send a request in time.
 * One request per connection (`connection: close`).
 *
 * @module
 */
import { formatAddress } from "../config/endpoint.ts";
import { serveLoop } from "../relay/serve_loop.ts";
import { hostAllowed, type StatusAnswer } from "./routes.ts";

/** At most this many connections at once; more are closed at once. */
const MAX_CONNECTIONS = 32;
/** A request head must arrive within this. */
const REQUEST_TIMEOUT_MS = 5_000;
/** And be at most this long. */
const MAX_HEAD_BYTES = 8 * 1024;

/** A running status endpoint. */
export interface StatusEndpoint {
  /** `ip:port` it is bound to. */
  readonly address: string;
  close(): Promise<void>;
}

/** What the server reports and asks. */
export interface StatusServerHooks {
  answer(method: string, target: string): StatusAnswer;
  failing(error: unknown): void;
  recovered(failures: number): void;
}

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  421: "Misdirected Request",
  431: "Request Header Fields Too Large",
};

/** Starts the endpoint; throws (like a listener) if the address cannot be bound. */
export function serveStatus(
  address: { readonly hostname: string; readonly port: number },
  hooks: StatusServerHooks,
): StatusEndpoint {
  const listener = Deno.listen({ hostname: address.hostname, port: address.port });
  const bound = listener.addr;
  const open = new Set<Deno.TcpConn>();
  let closed = false;
  const loop = serveLoop(() => listener.accept(), (conn) => {
    if (open.size >= MAX_CONNECTIONS) return closeQuietly(conn);
    open.add(conn);
    respond(conn, bound, hooks).finally(() => {
      open.delete(conn);
      closeQuietly(conn);
    });
  }, {
    closed: () => closed,
    failing: hooks.failing,
    recovered: hooks.recovered,
  });
  return {
    address: formatAddress(bound.hostname, bound.port),
    async close() {
      closed = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      for (const conn of open) closeQuietly(conn);
      await loop;
    },
  };
}

async function respond(
  conn: Deno.TcpConn,
  bound: Deno.NetAddr,
  hooks: StatusServerHooks,
): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), REQUEST_TIMEOUT_MS);
  try {
    const head = await readHead(conn);
    if (head === null) return;
    if ("error" in head) return await send(conn, plain(head.error), false);
    if (!hostAllowed(head.host, bound.hostname, bound.port)) {
      return await send(conn, plain(421, "this endpoint answers only to its own address\n"), false);
    }
    await send(conn, hooks.answer(head.method, head.target), head.method === "HEAD");
  } catch {
    // The client went away; nothing to report.
  } finally {
    clearTimeout(timer);
  }
}

function plain(status: number, body = `${STATUS_TEXT[status]}\n`): StatusAnswer {
  return { status, headers: { "content-type": "text/plain" }, body };
}

/** Reads the request line and headers; null if the client left first. */
async function readHead(
  conn: Deno.TcpConn,
): Promise<{ method: string; target: string; host: string | null } | { error: number } | null> {
  const buffer = new Uint8Array(MAX_HEAD_BYTES);
  let length = 0;
  for (;;) {
    const n = await conn.read(buffer.subarray(length));
    if (n === null) return null;
    length += n;
    const text = new TextDecoder().decode(buffer.subarray(0, length));
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) return parseHead(text.slice(0, end));
    if (length === buffer.length) return { error: 431 };
  }
}

function parseHead(head: string): { method: string; target: string; host: string | null } | {
  error: number;
} {
  const [requestLine, ...headerLines] = head.split("\r\n");
  const request = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(requestLine);
  if (!request) return { error: 400 };
  let host: string | null = null;
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === "host") {
      host = line.slice(colon + 1).trim();
    }
  }
  return { method: request[1], target: request[2], host };
}

async function send(conn: Deno.TcpConn, answer: StatusAnswer, headOnly: boolean): Promise<void> {
  const body = new TextEncoder().encode(answer.body);
  const headers = Object.entries({
    ...answer.headers,
    "content-length": String(body.length),
    connection: "close",
  }).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  const head = new TextEncoder().encode(
    `HTTP/1.1 ${answer.status} ${STATUS_TEXT[answer.status] ?? ""}\r\n${headers}\r\n`,
  );
  const whole = headOnly ? head : new Uint8Array(head.length + body.length);
  if (!headOnly) {
    whole.set(head);
    whole.set(body, head.length);
  }
  for (let written = 0; written < whole.length;) {
    written += await conn.write(whole.subarray(written));
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
