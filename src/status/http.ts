/**
 * The status endpoint's HTTP server: a small HTTP/1.1 responder on its own
 * accept loop, so that it can do what `Deno.serve` cannot: survive running
 * out of descriptors (back off and serve again, like the relay listeners),
 * cap its own connections, and drop clients that do not send a request in time.
 * One request per connection (`connection: close`).
 *
 * Connections that hold a slot without asking anything are how a hostile
 * client would lock scrapers out. So when every slot is taken, the endpoint
 * stops accepting (new connections, request and all, wait in the kernel's
 * queue) and the wait for a request head shortens: a connection that has sent
 * nothing is closed after {@linkcode PRESSED_HEAD_MS}, or after
 * {@linkcode PRESSED_HEAD_OVER_SHARE_MS} when its client address holds more
 * than {@linkcode CLIENT_SHARE} slots. A scraper that asks at once is answered
 * within about that long when one address (its own or another) keeps opening
 * idle connections; against many addresses, each under its share, the wait
 * grows with the kernel's queue (about a second per 32 queued connections).
 *
 * @module
 */
import { formatAddress } from "../config/endpoint.ts";
import { listenTcp, type PortClaim } from "../relay/port_claim.ts";
import { serveLoop } from "../relay/serve_loop.ts";
import { hostAllowed, type StatusAnswer } from "./routes.ts";

/** At most this many connections at once; then accepting pauses. */
const MAX_CONNECTIONS = 32;
/** A request head must arrive within this when every slot is taken. */
const PRESSED_HEAD_MS = 1_000;
/** Slots one client address may hold before its silent ones are the first to go. */
const CLIENT_SHARE = 8;
/** The head timeout of such a client's connections when every slot is taken. */
const PRESSED_HEAD_OVER_SHARE_MS = 100;
/** How often silent connections are checked while every slot is taken. */
const PRESSED_CHECK_MS = 50;
/** A request head must arrive within this. */
const REQUEST_TIMEOUT_MS = 5_000;
/** And be at most this long. */
const MAX_HEAD_BYTES = 8 * 1024;

/** A running status endpoint. */
export interface StatusEndpoint {
  /** `ip:port` it is bound to. */
  readonly address: string;
  /** The same, apart. */
  readonly bound: { readonly address: string; readonly port: number };
  close(): Promise<void>;
}

/** What the server reports and asks. */
export interface StatusServerHooks {
  answer(method: string, target: string): StatusAnswer;
  /** More `Host` values to answer (`status_hosts`), read per request: a reload changes them. */
  allowedHosts(): readonly string[];
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
  claim: PortClaim,
): StatusEndpoint {
  const listener = listenTcp(address.hostname, address.port, claim);
  const bound = listener.addr;
  const slots = new Slots();
  let closed = false;
  const loop = serveLoop(() => listener.accept(), (conn) => {
    slots.admit(conn);
    respond(conn, hooks, () => slots.answering(conn)).finally(() => {
      slots.release(conn);
      closeQuietly(conn);
    });
    // Full: accept again only once a slot is free (the loop waits for this).
    if (slots.full) return slots.freed();
  }, {
    closed: () => closed,
    failing: hooks.failing,
    recovered: hooks.recovered,
  });
  return {
    address: formatAddress(bound.hostname, bound.port),
    bound: { address: bound.hostname, port: bound.port },
    async close() {
      closed = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      slots.closeAll();
      await loop;
    },
  };
}

/** The endpoint's connections: who holds them, since when, and which are still silent. */
class Slots {
  readonly #open = new Map<Deno.TcpConn, { client: string; since: number; silent: boolean }>();
  readonly #perClient = new Map<string, number>();
  #free: PromiseWithResolvers<void> | null = null;
  #check: ReturnType<typeof setInterval> | undefined;

  get full(): boolean {
    return this.#open.size >= MAX_CONNECTIONS;
  }

  admit(conn: Deno.TcpConn): void {
    const client = conn.remoteAddr.hostname;
    this.#open.set(conn, { client, since: performance.now(), silent: true });
    this.#perClient.set(client, (this.#perClient.get(client) ?? 0) + 1);
  }

  /** `conn` sent its request: it keeps its slot until answered. */
  answering(conn: Deno.TcpConn): void {
    const slot = this.#open.get(conn);
    if (slot) slot.silent = false;
  }

  release(conn: Deno.TcpConn): void {
    const slot = this.#open.get(conn);
    if (!slot) return;
    this.#open.delete(conn);
    const left = (this.#perClient.get(slot.client) ?? 1) - 1;
    if (left > 0) this.#perClient.set(slot.client, left);
    else this.#perClient.delete(slot.client);
    if (this.#free && !this.full) {
      clearInterval(this.#check);
      this.#free.resolve();
      this.#free = null;
    }
  }

  /** Resolves once a slot is free; meanwhile silent connections get the shorter timeouts. */
  freed(): Promise<void> {
    this.#free ??= Promise.withResolvers();
    const { promise } = this.#free;
    clearInterval(this.#check);
    this.#check = setInterval(() => this.#closeSilent(performance.now()), PRESSED_CHECK_MS);
    this.#closeSilent(performance.now());
    return promise;
  }

  closeAll(): void {
    for (const conn of [...this.#open.keys()]) {
      this.release(conn);
      closeQuietly(conn);
    }
    clearInterval(this.#check);
    this.#free?.resolve();
  }

  #closeSilent(now: number): void {
    for (const [conn, slot] of [...this.#open]) {
      if (!slot.silent) continue;
      const overShare = (this.#perClient.get(slot.client) ?? 0) > CLIENT_SHARE;
      if (now - slot.since < (overShare ? PRESSED_HEAD_OVER_SHARE_MS : PRESSED_HEAD_MS)) continue;
      this.release(conn);
      closeQuietly(conn);
    }
  }
}

async function respond(
  conn: Deno.TcpConn,
  hooks: StatusServerHooks,
  answering: () => void,
): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), REQUEST_TIMEOUT_MS);
  try {
    const head = await readHead(conn);
    if (head === null) return;
    answering();
    if ("error" in head) return await send(conn, plain(head.error), false);
    // The address the client reached: for a wildcard bind, the interface's own address.
    const local = conn.localAddr;
    if (!hostAllowed(head.host, local.hostname, local.port, hooks.allowedHosts())) {
      return await send(
        conn,
        plain(421, "this endpoint answers only to its own address or the names in status_hosts\n"),
        false,
      );
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
