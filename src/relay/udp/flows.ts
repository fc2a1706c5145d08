/**
 * The UDP flow table of one listener: which client (address, port) has which
 * live session. A draining listener asks to be told when the last flow ends,
 * so it can close its socket then.
 *
 * @module
 */

/** Flows by client `address port`. */
export class FlowTable<Flow> {
  readonly #flows = new Map<string, Flow>();
  #whenEmpty: (() => void) | undefined;

  /** The key of a client address. */
  static keyOf(address: Deno.NetAddr): string {
    return `${address.hostname} ${address.port}`;
  }

  get(key: string): Flow | undefined {
    return this.#flows.get(key);
  }

  add(key: string, flow: Flow): void {
    this.#flows.set(key, flow);
  }

  /** Forgets a flow; wakes {@linkcode onEmpty}'s callback when it was the last. */
  delete(key: string): void {
    this.#flows.delete(key);
    if (this.#flows.size === 0) this.#wake();
  }

  get size(): number {
    return this.#flows.size;
  }

  /** Calls `callback` once no flow is left (at once if none is). */
  onEmpty(callback: () => void): void {
    this.#whenEmpty = callback;
    if (this.#flows.size === 0) this.#wake();
  }

  /** No longer wants to be told (the listener takes new flows again). */
  cancelOnEmpty(): void {
    this.#whenEmpty = undefined;
  }

  #wake(): void {
    const callback = this.#whenEmpty;
    this.#whenEmpty = undefined;
    callback?.();
  }
}
