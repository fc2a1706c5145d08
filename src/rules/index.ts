/**
 * First match without a linear scan. A listener's rules are tried in file
 * order; with thousands of them, scanning each `from` for every new client
 * cost the relay most of its connection rate. The index cuts each address
 * family's space into disjoint ranges, each labelled with the first rule
 * (by file order) whose networks cover it: a lookup is a binary search.
 *
 * Rules that answer only for one local address of a wildcard socket
 * (`Binding.only`) are indexed apart, one table per such address; a lookup
 * asks the tables that apply to the address the client reached and keeps the
 * earliest rule. The answer is exactly the linear scan's (a property test
 * compares the two). Pure.
 *
 * @module
 */
import type { IpAddress, Network } from "../config/network.ts";
import type { Binding } from "./plan.ts";

/** One family's space as disjoint ranges: `starts[i]` up to the next start has `firsts[i]`. */
class RangeTable<Key extends number | bigint> {
  constructor(readonly starts: readonly Key[], readonly firsts: Int32Array) {}

  /** The first binding (index) covering `key`, or -1. */
  lookup(key: Key): number {
    const { starts } = this;
    let low = 0;
    let high = starts.length - 1;
    // The last start at or below `key` (starts[0] is the family's first address).
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (starts[middle] <= key) low = middle;
      else high = middle - 1;
    }
    return this.firsts[low];
  }

  /** Labels each range with the least index of the intervals covering it (a sweep). */
  static build<Key extends number | bigint>(
    intervals: { start: Key; end: Key; index: number }[],
    zero: Key,
    after: (end: Key) => Key,
  ): RangeTable<Key> {
    const sorted = intervals.toSorted((
      a,
      b,
    ) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const points = new Set<Key>([zero]);
    for (const { start, end } of sorted) {
      points.add(start);
      points.add(after(end));
    }
    const ordered = [...points].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const starts: Key[] = [];
    const firsts: number[] = [];
    const covering = new MinHeap();
    let next = 0;
    for (const point of ordered) {
      while (next < sorted.length && sorted[next].start === point) {
        covering.push(sorted[next].index, next);
        next++;
      }
      // Intervals that ended before this point leave as they come to the top.
      while (covering.size > 0 && sorted[covering.topItem].end < point) covering.pop();
      const first = covering.size > 0 ? covering.topKey : -1;
      if (firsts.length === 0 || firsts[firsts.length - 1] !== first) {
        starts.push(point);
        firsts.push(first);
      }
    }
    return new RangeTable(starts, Int32Array.from(firsts));
  }
}

/** A binary heap of (key, item) pairs, least key on top. */
class MinHeap {
  readonly #keys: number[] = [];
  readonly #items: number[] = [];

  get size(): number {
    return this.#keys.length;
  }
  get topKey(): number {
    return this.#keys[0];
  }
  get topItem(): number {
    return this.#items[0];
  }

  push(key: number, item: number): void {
    const keys = this.#keys;
    const items = this.#items;
    let at = keys.length;
    keys.push(key);
    items.push(item);
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (keys[parent] <= key) break;
      keys[at] = keys[parent];
      items[at] = items[parent];
      at = parent;
    }
    keys[at] = key;
    items[at] = item;
  }

  pop(): void {
    const keys = this.#keys;
    const items = this.#items;
    const lastKey = keys.pop()!;
    const lastItem = items.pop()!;
    if (keys.length === 0) return;
    let at = 0;
    for (;;) {
      const left = 2 * at + 1;
      if (left >= keys.length) break;
      const child = left + 1 < keys.length && keys[left + 1] < keys[left] ? left + 1 : left;
      if (keys[child] >= lastKey) break;
      keys[at] = keys[child];
      items[at] = items[child];
      at = child;
    }
    keys[at] = lastKey;
    items[at] = lastItem;
  }
}

/** An IPv4 address as a number. */
function v4Key(address: IpAddress): number {
  const [a, b, c, d] = (address as unknown as { octets: number[] }).octets;
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

/** An IPv6 address as a bigint. */
function v6Key(address: IpAddress): bigint {
  let key = 0n;
  for (const part of (address as unknown as { parts: number[] }).parts) {
    key = (key << 16n) | BigInt(part);
  }
  return key;
}

/** The tables of one `only` group: the bindings that answer for the same local addresses. */
class GroupTables {
  readonly v4: RangeTable<number>;
  readonly v6: RangeTable<bigint>;

  constructor(bindings: readonly { binding: Binding; index: number }[]) {
    const v4: { start: number; end: number; index: number }[] = [];
    const v6: { start: bigint; end: bigint; index: number }[] = [];
    for (const { binding, index } of bindings) {
      for (const net of binding.rule.from) addNetwork(net, index, v4, v6);
    }
    this.v4 = RangeTable.build(v4, 0, (end) => end + 1);
    this.v6 = RangeTable.build(v6, 0n, (end) => end + 1n);
  }

  lookup(client: IpAddress): number {
    return client.kind() === "ipv4" ? this.v4.lookup(v4Key(client)) : this.v6.lookup(v6Key(client));
  }
}

function addNetwork(
  net: Network,
  index: number,
  v4: { start: number; end: number; index: number }[],
  v6: { start: bigint; end: bigint; index: number }[],
): void {
  if (net.address.kind() === "ipv4") {
    const size = 2 ** (32 - net.prefix);
    const start = Math.floor(v4Key(net.address) / size) * size;
    v4.push({ start, end: start + size - 1, index });
  } else {
    const size = 1n << BigInt(128 - net.prefix);
    const start = (v6Key(net.address) / size) * size;
    v6.push({ start, end: start + size - 1n, index });
  }
}

/** A listener's rules, indexed for first match. */
export class RuleIndex {
  /** Bindings that take every address the socket does (`only` null). */
  readonly #everywhere: GroupTables;
  /** Bindings of one local address (`0.0.0.0`: every IPv4 address), by that address. */
  readonly #byLocal = new Map<string, GroupTables>();

  constructor(readonly bindings: readonly Binding[]) {
    const groups = new Map<string | null, { binding: Binding; index: number }[]>();
    bindings.forEach((binding, index) => {
      const group = groups.get(binding.only) ?? [];
      group.push({ binding, index });
      groups.set(binding.only, group);
    });
    this.#everywhere = new GroupTables(groups.get(null) ?? []);
    for (const [only, group] of groups) {
      if (only !== null) this.#byLocal.set(only, new GroupTables(group));
    }
  }

  /** What {@linkcode firstMatchLinear} would return, by lookups instead of a scan. */
  firstMatch(client: IpAddress, local: IpAddress | null = null): Binding | undefined {
    let first = this.#everywhere.lookup(client);
    if (local !== null && this.#byLocal.size > 0) {
      const earliest = (tables: GroupTables | undefined) => {
        const found = tables ? tables.lookup(client) : -1;
        if (found >= 0 && (first < 0 || found < first)) first = found;
      };
      if (local.kind() === "ipv4") earliest(this.#byLocal.get("0.0.0.0"));
      earliest(this.#byLocal.get(local.toString()));
    }
    return first < 0 ? undefined : this.bindings[first];
  }
}
