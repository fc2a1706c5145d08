/**
 * What the status endpoint answers, without sockets: the paths, read-only
 * methods, the Host check against DNS rebinding, and renderings cached so
 * that scrapers cannot make the bouncer spend its time rendering. Pure but
 * for the clock passed in.
 *
 * @module
 */
import { parseClientAddress } from "../config/network.ts";

/** An answer to send. */
export interface StatusAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** The renderings a request may ask for. */
export interface StatusRenderers {
  page(query: URLSearchParams): string;
  statusJson(query: URLSearchParams): string;
  metrics(): string;
  sessionsJson(): string;
  historyJson(): string;
  /** Throws {@linkcode BadQuery} for a query it cannot answer. */
  clientsJson(query: URLSearchParams): string;
}

/** A query a rendering cannot answer (a rule that does not exist, a bad duration): 400. */
export class BadQuery extends Error {}

const COMMON = { "cache-control": "no-store", "x-content-type-options": "nosniff" };
const PATHS: Record<
  string,
  { type: string; render: (r: StatusRenderers, q: URLSearchParams) => string }
> = {
  "/": { type: "text/html; charset=utf-8", render: (r, q) => r.page(q) },
  "/status.json": { type: "application/json", render: (r, q) => r.statusJson(q) },
  "/sessions.json": { type: "application/json", render: (r) => r.sessionsJson() },
  "/history.json": { type: "application/json", render: (r) => r.historyJson() },
  "/clients.json": { type: "application/json", render: (r, q) => r.clientsJson(q) },
  "/metrics": { type: "text/plain; version=0.0.4; charset=utf-8", render: (r) => r.metrics() },
};

/** Answers `method path` (GET and HEAD only). */
export function answer(
  method: string,
  target: string,
  renderers: StatusRenderers,
): StatusAnswer {
  if (method !== "GET" && method !== "HEAD") {
    return {
      status: 405,
      headers: { ...COMMON, allow: "GET, HEAD", "content-type": "text/plain" },
      body: "read-only: GET or HEAD\n",
    };
  }
  let url: URL;
  try {
    url = new URL(target, "http://status.invalid");
  } catch {
    return {
      status: 400,
      headers: { ...COMMON, "content-type": "text/plain" },
      body: "bad request\n",
    };
  }
  const route = PATHS[url.pathname];
  if (!route) {
    return {
      status: 404,
      headers: { ...COMMON, "content-type": "text/plain" },
      body: `not found: try ${Object.keys(PATHS).join(", ")}\n`,
    };
  }
  let body: string;
  try {
    body = route.render(renderers, url.searchParams);
  } catch (error) {
    if (!(error instanceof BadQuery)) throw error;
    return {
      status: 400,
      headers: { ...COMMON, "content-type": "text/plain" },
      body: `bad request: ${error.message}\n`,
    };
  }
  return { status: 200, headers: { ...COMMON, "content-type": route.type }, body };
}

/** Whether an address is one a web page from elsewhere should never reach: loopback or private. */
function isInternal(address: string): boolean {
  const ip = parseClientAddress(address);
  if (!ip) return false;
  return ["loopback", "private", "linkLocal", "uniqueLocal"].includes(ip.range());
}

/** Whether the endpoint listens on every address (`0.0.0.0`, `::`). */
export function isWildcard(address: string): boolean {
  return address === "0.0.0.0" || address === "::";
}

/**
 * Whether a request's `Host` may be answered on a connection that arrived at
 * `hostname:port` (the connection's own local address: for an endpoint bound
 * to `0.0.0.0` or `::`, the address the client actually reached). On a
 * loopback or private address only names of that address are (and
 * `localhost` on loopback): a browser tricked into asking a rebinding domain
 * sends that domain, which is refused.
 */
export function hostAllowed(
  host: string | null,
  hostname: string,
  port: number,
  /** `status_hosts`: more names (`name` for any port, `name:port` for that one), lowercase. */
  extra: readonly string[] = [],
): boolean {
  if (!isInternal(hostname)) return true;
  if (host === null) return false;
  const asked = host.trim().toLowerCase();
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(asked);
  if (!match) return false;
  if (extra.includes(asked) || extra.includes(match[1])) return true;
  if (match[2] !== undefined && Number(match[2]) !== port) return false;
  const name = match[1].replace(/^\[|\]$/g, "");
  if (name === "localhost") return parseClientAddress(hostname)?.range() === "loopback";
  return parseClientAddress(name)?.toString() === parseClientAddress(hostname)?.toString();
}

/** Renderings reused for a while, so that many scrapers cost about one; bounded in count and bytes. */
export class RenderCache {
  readonly #entries = new Map<string, { body: string; at: number; ttl: number }>();

  #bytes = 0;

  /**
   * @param minTtlMs how long a rendering is reused at least
   * @param maxEntries renderings kept at most (queries vary: `?since=` takes any duration)
   * @param maxBytes the most their text may take together (a ledger's rendering can be large)
   */
  constructor(
    readonly minTtlMs = 250,
    readonly maxEntries = 64,
    readonly maxBytes = 64 * 1024 * 1024,
  ) {}

  /** Forgets every rendering (what they show has changed: a reload). */
  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /**
   * The rendering for `key`: a recent one, or a new one from `render`. A
   * rendering that took long is reused longer (10 times its cost), which
   * bounds the share of time rendering takes.
   */
  #forget(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#bytes -= entry.body.length * 2;
    this.#entries.delete(key);
  }

  get(key: string, render: () => string, now: number): string {
    const cached = this.#entries.get(key);
    if (cached && now - cached.at < cached.ttl) return cached.body;
    const started = performance.now();
    const body = render();
    const cost = performance.now() - started;
    this.#forget(key);
    // Strings are two bytes a character at most: counted so, the bound holds.
    if (body.length * 2 > this.maxBytes) return body;
    this.#entries.set(key, { body, at: now, ttl: Math.max(this.minTtlMs, 10 * cost) });
    this.#bytes += body.length * 2;
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= this.maxEntries && this.#bytes <= this.maxBytes) break;
      this.#forget(oldest);
    }
    return body;
  }
}
