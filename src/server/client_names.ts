/**
 * Client names for the ledger: each client address's reverse-DNS name,
 * looked up in the background and never on a session's path. A session only
 * asks for a name (a map lookup); a timer takes the queue at most 20
 * lookups a second, each with a short timeout, and names (or the lack of
 * one) are kept for an hour. Queue and cache are bounded, so a flood of
 * distinct clients costs a bounded amount of memory and DNS traffic.
 *
 * @module
 */
import { parseIp } from "../config/network.ts";

/** Finds the name of an address, or null; rejects or times out on failure. */
export type ReverseLookup = (address: string, signal: AbortSignal) => Promise<string | null>;

/** How names are looked up and kept. */
export interface ClientNamesOptions {
  /** Lookups a second at most. */
  readonly perSecond?: number;
  /** Each lookup's timeout (ms). */
  readonly timeoutMs?: number;
  /** How long a name (or none) is kept (ms). */
  readonly keepMs?: number;
  /** Addresses kept at most; the least recently asked go first. */
  readonly maxNames?: number;
  /** Addresses waiting for a lookup at most; more are asked again later. */
  readonly maxQueue?: number;
  /** The clock (epoch ms). */
  readonly now?: () => number;
}

interface Known {
  readonly name: string | null;
  readonly at: number;
}

/** Reverse-DNS names of client addresses, found in the background. */
export class ClientNames {
  readonly #known = new Map<string, Known>();
  readonly #queue = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #inFlight = 0;
  /** Lookups made, and those that failed or timed out (for /metrics). */
  lookups = 0;
  failures = 0;
  readonly #perSecond: number;
  readonly #timeoutMs: number;
  readonly #keepMs: number;
  readonly #maxNames: number;
  readonly #maxQueue: number;
  readonly #now: () => number;

  constructor(readonly lookup: ReverseLookup = reverseDns(), options: ClientNamesOptions = {}) {
    this.#perSecond = options.perSecond ?? 20;
    this.#timeoutMs = options.timeoutMs ?? 2_000;
    this.#keepMs = options.keepMs ?? 3_600_000;
    this.#maxNames = options.maxNames ?? 100_000;
    this.#maxQueue = options.maxQueue ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** The name of `address` as known now (null: none, or not found yet); asks for it if due. */
  nameOf(address: string): string | null {
    const known = this.#known.get(address);
    if (known === undefined || this.#now() - known.at >= this.#keepMs) this.want(address);
    return known?.name ?? null;
  }

  /** Asks for `address`'s name, unless it is known and fresh: O(1), for a session's path. */
  want(address: string): void {
    const known = this.#known.get(address);
    if (known !== undefined && this.#now() - known.at < this.#keepMs) return;
    if (this.#queue.size >= this.#maxQueue) return;
    this.#queue.add(address);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#lookupNext(), 1_000 / this.#perSecond);
      Deno.unrefTimer(this.#timer);
    }
  }

  /** Stops looking up (names known stay). */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#queue.clear();
  }

  /** One tick of the timer: takes one address off the queue and starts its lookup. */
  #lookupNext(): void {
    const [address] = this.#queue;
    if (address === undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    // Never more at once than a second's worth: a resolver that hangs does not pile them up.
    if (this.#inFlight >= this.#perSecond) return;
    this.#queue.delete(address);
    this.#inFlight++;
    this.lookups++;
    const signal = AbortSignal.timeout(this.#timeoutMs);
    // A lookup that ignores its signal still ends at the timeout.
    const timedOut = new Promise<never>((_, reject) =>
      signal.addEventListener("abort", () => reject(signal.reason), { once: true })
    );
    void Promise.race([this.lookup(address, signal), timedOut])
      .then((name) => this.#remember(address, name))
      .catch(() => {
        this.failures++;
        this.#remember(address, null);
      })
      .finally(() => this.#inFlight--);
  }

  #remember(address: string, answer: string | null): void {
    // Whatever the lookup gave, only a host name is kept (see `hostName`).
    const name = answer === null ? null : hostName(answer);
    this.#known.delete(address);
    this.#known.set(address, { name, at: this.#now() });
    for (const oldest of this.#known.keys()) {
      if (this.#known.size <= this.#maxNames) break;
      this.#known.delete(oldest);
    }
  }
}

/** The name a reverse (PTR) query asks about: `7.100.51.198.in-addr.arpa`, or the ip6.arpa nibbles. */
export function reverseName(address: string): string | null {
  const ip = parseIp(address);
  if ("error" in ip) return null;
  if (ip.kind() === "ipv4") return `${ip.toByteArray().reverse().join(".")}.in-addr.arpa`;
  const hex = ip.toByteArray().map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${[...hex].reverse().join(".")}.ip6.arpa`;
}

/**
 * A PTR answer as a name, or null: whoever runs the reverse zone of a
 * client's address writes it, so only host-name characters are taken (an
 * escape sequence in it would reach the operator's terminal).
 */
function hostName(answer: string): string | null {
  const name = answer.replace(/\.$/, "");
  return /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(name) && name.length <= 253 ? name : null;
}

/** A reverse-DNS lookup with the system's name servers (or `nameServer`, in tests). */
export function reverseDns(nameServer?: { ipAddr: string; port: number }): ReverseLookup {
  return async (address, signal) => {
    const query = reverseName(address);
    if (query === null) return null;
    try {
      const names = await Deno.resolveDns(query, "PTR", { signal, nameServer });
      return names.length > 0 ? hostName(names[0]) : null;
    } catch (error) {
      // No such name is an answer; anything else (timeout, no server) is a failure.
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
  };
}
