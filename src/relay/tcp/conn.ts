/**
 * What the TCP relay reads from and writes to: a `Deno.TcpConn`, or a
 * `node:net` socket behind the same face. `node:net` is used only where Deno's
 * own sockets cannot do the job: connecting from a chosen source address
 * (`Deno.connect` ignores one), and it can also reset a connection
 * (`Deno.TcpConn.close()` always ends it cleanly) (docs/PLATFORM.md).
 *
 * @module
 */
import type net from "node:net";

/** The part of a connection the relay uses. */
export interface RelayConn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay(noDelay?: boolean): void;
  setKeepAlive(keepAlive?: boolean): void;
  readonly localAddr: Deno.NetAddr;
  readonly remoteAddr: Deno.NetAddr;
  /** Ends the connection with a reset (RST), where the runtime can. */
  reset?(): void;
}

/** Node's error codes as the Deno errors the relay tells apart. */
export function denoError(error: unknown): unknown {
  const code = (error as { code?: string })?.code;
  const message = (error as Error)?.message ?? String(error);
  switch (code) {
    case "ECONNRESET":
      return new Deno.errors.ConnectionReset(message);
    case "EPIPE":
      return new Deno.errors.BrokenPipe(message);
    case "ECONNREFUSED":
      return new Deno.errors.ConnectionRefused(message);
    case "EADDRNOTAVAIL":
      return new Deno.errors.AddrNotAvailable(message);
    case "ETIMEDOUT":
      return new Deno.errors.TimedOut(message);
    case "ENOTCONN":
      return new Deno.errors.NotConnected(message);
    default:
      return error;
  }
}

/** A connected `node:net` socket with the relay's read/write face (backpressure included). */
export class NodeConn implements RelayConn {
  #ended = false;
  #error: unknown = null;
  #wake: (() => void) | null = null;

  constructor(readonly socket: net.Socket) {
    const wake = () => {
      const resolve = this.#wake;
      this.#wake = null;
      resolve?.();
    };
    socket.on("readable", wake);
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (error) => {
      this.#error = denoError(error);
      wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      wake();
    });
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    for (;;) {
      const chunk = this.socket.read() as Uint8Array | null;
      if (chunk !== null) {
        const n = Math.min(chunk.length, buffer.length);
        buffer.set(chunk.subarray(0, n));
        if (n < chunk.length) this.socket.unshift(chunk.subarray(n));
        return n;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Resolves once the data is handed to the system, so the caller may reuse its buffer. */
  write(data: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.socket.write(data, (error) => error ? reject(denoError(error)) : resolve(data.length));
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.socket.end(() => resolve()));
  }

  close(): void {
    this.socket.destroy();
  }

  reset(): void {
    this.socket.resetAndDestroy();
  }

  setNoDelay(noDelay = true): void {
    this.socket.setNoDelay(noDelay);
  }

  setKeepAlive(keepAlive = true): void {
    this.socket.setKeepAlive(keepAlive);
  }

  get localAddr(): Deno.NetAddr {
    return {
      transport: "tcp",
      hostname: this.socket.localAddress ?? "",
      port: this.socket.localPort ?? 0,
    };
  }

  get remoteAddr(): Deno.NetAddr {
    return {
      transport: "tcp",
      hostname: this.socket.remoteAddress ?? "",
      port: this.socket.remotePort ?? 0,
    };
  }
}
