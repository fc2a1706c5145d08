/**
 * Assertions for the tests, on `node:assert` (JSR's @std/assert is not
 * reachable from these machines).
 *
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Asserts that `value` is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

/** Asserts deep, strict equality. */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** Asserts that `text` contains `part`. */
export function assertIncludes(text: string, part: string, message?: string): void {
  nodeAssert.ok(
    text.includes(part),
    message ?? `expected ${JSON.stringify(part)} in:\n${text}`,
  );
}

/** Asserts that `text` matches `pattern`. */
export function assertMatch(text: string, pattern: RegExp, message?: string): void {
  nodeAssert.match(text, pattern, message);
}

/** Asserts that `fn` throws an error whose message contains `part`. */
export function assertThrows(fn: () => unknown, part: string): void {
  nodeAssert.throws(fn, (error: unknown) => error instanceof Error && error.message.includes(part));
}
