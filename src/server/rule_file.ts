/**
 * Reads, validates and plans a rule file: what `run` and `check` share.
 *
 * @module
 */
import {
  type ConfigProblem,
  type LoadResult,
  parseConfigSteps,
  type RuleReuse,
} from "../config/load.ts";
import { loadServices } from "../config/services.ts";
import type { Config, Rule } from "../config/types.ts";
import { runSteps, runStepsSliced, type Steps } from "../config/work_steps.ts";
import { formatDuration } from "../config/duration.ts";
import { within } from "../relay/timers.ts";
import { expiryWarnings, hasExpired } from "../rules/expiry.ts";
import {
  buildPlan,
  buildPlanSteps,
  type HostFacts,
  type ListenerPlan,
  listenNames,
  type PlanOptions,
  type ResolvedNames,
} from "../rules/plan.ts";
import { hostFacts, resolveNames } from "../rules/resolve.ts";

/**
 * What a plan was built from: enough for a worker isolate to build the very
 * same plan (rules hold class instances, which do not cross isolates).
 */
export interface PlanInputs {
  readonly text: string;
  readonly source: string;
  readonly resolved: ResolvedNames;
  readonly facts: HostFacts;
  /** Rules left out because their `until` has passed (by name). */
  readonly expired?: readonly string[];
}

/** A rule file's text, read and valid. */
type ParsedRules = Extract<LoadResult, { ok: true }>;

/** A rule file ready to run, or everything wrong with it. */
export type LoadedRules =
  | {
    readonly ok: true;
    readonly config: Config;
    readonly listeners: ListenerPlan[];
    readonly warnings: readonly ConfigProblem[];
    /**
     * The text as read: its own warnings (those of `until` dates depend on
     * the hour), and its rules for the next load to keep those that did not change.
     */
    readonly parsed: ParsedRules;
    /** The service names the text was read with (`/etc/services`), as JSON. */
    readonly servicesText: string;
    readonly inputs: PlanInputs;
  }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

/** How a rule file is loaded. */
export interface LoadOptions extends PlanOptions {
  /**
   * The rules loaded last time (with the same plan options): a text that has
   * not changed keeps its rules, and its plan too if names resolve and
   * interfaces hold the addresses they held; a reload that changes nothing
   * then does almost nothing.
   */
  readonly previous?: LoadedRules;
  /**
   * Gives up on what waits on the world (reading the file: a hung network
   * mount; resolving listen names: a resolver that does not answer) after
   * this long each. Parsing in slices is not waiting, however long it takes.
   */
  readonly waitTimeoutMs?: number;
}

/** Rule files larger than this are refused: a rule file is text a person writes. */
export const MAX_RULE_FILE_BYTES = 4 * 1024 * 1024;

/** Loads `path`: read, parse, validate, resolve listen names, plan. */
export async function loadRuleFile(path: string, options?: LoadOptions): Promise<LoadedRules> {
  const timeoutMs = options?.waitTimeoutMs;
  const read = await within(readRuleFile(path), timeoutMs, () => ({
    problem: `cannot read the rule file: no answer within ${formatDuration(timeoutMs!)}`,
  }));
  if ("problem" in read) {
    return { ok: false, problems: [{ where: read.where ?? path, message: read.problem }] };
  }
  return await loadRuleText(read.text, path, options);
}

/** Reads a rule file: a regular file, not too large, in UTF-8. */
async function readRuleFile(
  path: string,
): Promise<{ text: string } | { problem: string; where?: string }> {
  let bytes: Uint8Array;
  try {
    // stat before open: opening a FIFO would block until a writer comes.
    const info = await Deno.stat(path);
    if (!info.isFile) {
      return { problem: "cannot read the rule file: it is not a regular file" };
    }
    if (info.size > MAX_RULE_FILE_BYTES) {
      return {
        problem: `the rule file is ${info.size} bytes; at most ${MAX_RULE_FILE_BYTES} are read`,
      };
    }
    using file = await Deno.open(path);
    const read = await readUpTo(file, info.size, MAX_RULE_FILE_BYTES);
    if (read === null) {
      return { problem: `the rule file grew past ${MAX_RULE_FILE_BYTES} bytes while read` };
    }
    bytes = read;
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (error as Error).message.replace(/ \(os error \d+\)$/, "");
    return { problem: `cannot read the rule file: ${why}` };
  }
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    const { line, column } = firstInvalidUtf8(bytes);
    return {
      where: `${path}:${line}:${column}`,
      problem: "the rule file is not valid UTF-8 (save it as UTF-8)",
    };
  }
}

/**
 * Reads `reader` to its end: into room for the `sizeHint` bytes it was said to
 * hold, and one more to see it grew (a reload reads the file often: no 4 MiB
 * each time), growing the room as it must. Null once past `max` bytes.
 */
export async function readUpTo(
  reader: { read(into: Uint8Array): Promise<number | null> },
  sizeHint: number,
  max: number,
): Promise<Uint8Array | null> {
  let bytes = new Uint8Array(Math.min(sizeHint, max) + 1);
  let length = 0;
  for (;;) {
    if (length === bytes.length) {
      const larger = new Uint8Array(Math.min(2 * bytes.length, max + 1));
      larger.set(bytes);
      bytes = larger;
    }
    const n = await reader.read(bytes.subarray(length));
    if (n === null) return bytes.subarray(0, length);
    length += n;
    if (length > max) return null;
  }
}

/** Where the first byte sequence that is not UTF-8 starts (1-based line and byte column). */
export function firstInvalidUtf8(bytes: Uint8Array): { line: number; column: number } {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < bytes.length;) {
    const byte = bytes[i];
    const length = byte < 0x80 ? 1 : byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc2 ? 2 : 0;
    let valid = length > 0 && i + length <= bytes.length;
    if (valid && length > 1) {
      try {
        decoder.decode(bytes.subarray(i, i + length));
      } catch {
        valid = false;
      }
    }
    if (!valid) return { line, column: i - lineStart + 1 };
    if (byte === 0x0a) {
      line++;
      lineStart = i + 1;
    }
    i += length;
  }
  return { line, column: bytes.length - lineStart + 1 };
}

/**
 * Loads rules given as text (`source` names them in messages): parse,
 * validate, resolve, plan. Parsing runs in slices, so that relaying goes on
 * while a large file is read.
 */
export async function loadRuleText(
  text: string,
  source: string,
  options: LoadOptions = {},
): Promise<LoadedRules> {
  const { previous, ...planOptions } = options;
  const services = loadServices();
  const servicesText = JSON.stringify([...services]);
  const same = previous?.ok && previous.inputs.text === text &&
      previous.inputs.source === source && previous.servicesText === servicesText
    ? previous
    : undefined;
  const parsed = same ? same.parsed : await runStepsSliced(
    parseConfigSteps(
      text,
      source,
      services,
      previous?.ok ? previous.parsed.reuse : undefined,
    ),
  );
  if (!parsed.ok) return parsed;
  const names = listenNames(parsed.config);
  const resolved = await within(resolveNames(names), options.waitTimeoutMs, () => null);
  if (resolved === null) {
    const waited = formatDuration(options.waitTimeoutMs!);
    const message = `listen names (${names.join(", ")}): no answer within ${waited}`;
    return { ok: false, problems: [{ where: source, message }] };
  }
  const facts = hostFacts();
  const { listeners, problems } = same && sameEntries(resolved, same.inputs.resolved) &&
      sameEntries(facts.interfaces, same.inputs.facts.interfaces)
    ? { listeners: same.listeners, problems: [] }
    : await runStepsSliced(buildPlanSteps(parsed.config, resolved, facts, planOptions));
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    config: parsed.config,
    listeners,
    warnings: [...parsed.warnings, ...expiryWarnings(parsed.config, Date.now())],
    parsed,
    servicesText,
    inputs: { text, source, resolved, facts },
  };
}

/** Whether two maps of plain values hold the same entries (in whatever order they were filled). */
function sameEntries(a: ReadonlyMap<string, unknown>, b: ReadonlyMap<string, unknown>): boolean {
  const text = (map: ReadonlyMap<string, unknown>) =>
    JSON.stringify([...map].sort(([x], [y]) => x < y ? -1 : x > y ? 1 : 0));
  return a.size === b.size && text(a) === text(b);
}

/**
 * The rules in force at `now`: those whose `until` has passed are left out
 * (as if removed from the file), and named in `inputs.expired` so that a
 * worker isolate leaves out the same. Returns the rules as they were when
 * none has ended.
 */
export function withoutExpired<
  T extends {
    readonly config: Config;
    readonly listeners: readonly ListenerPlan[];
    readonly inputs?: PlanInputs;
  },
>(loaded: T, now: number): { loaded: T; expired: Rule[] } {
  const { inputs } = loaded;
  // Rules not loaded from text (no inputs to plan again from) have no `until`.
  if (inputs === undefined) return { loaded, expired: [] };
  const expired = loaded.config.rules.filter((rule) => hasExpired(rule, now));
  if (expired.length === 0 && (inputs.expired ?? []).length === 0) return { loaded, expired };
  const config = {
    ...loaded.config,
    rules: loaded.config.rules.filter((r) => !expired.includes(r)),
  };
  const { listeners } = buildPlan(config, inputs.resolved, inputs.facts);
  return {
    loaded: {
      ...loaded,
      config,
      listeners,
      inputs: { ...inputs, expired: expired.map((r) => r.name) },
    },
    expired,
  };
}

/** A plan built again from its inputs, and its rules for the next time to keep. */
export interface RebuiltPlan {
  readonly config: Config;
  readonly listeners: ListenerPlan[];
  readonly reuse: RuleReuse;
}

/** Builds the plan again from its inputs (in a worker isolate); throws if it no longer holds. */
export function rebuildPlan(inputs: PlanInputs): RebuiltPlan {
  return runSteps(rebuildPlanSteps(inputs));
}

/**
 * {@linkcode rebuildPlan} in steps (a worker relays between them), keeping
 * the rules of `previous` that did not change.
 */
export function* rebuildPlanSteps(inputs: PlanInputs, previous?: RuleReuse): Steps<RebuiltPlan> {
  const parsed = yield* parseConfigSteps(inputs.text, inputs.source, loadServices(), previous);
  if (!parsed.ok) {
    throw new Error(parsed.problems.map((p) => `${p.where}: ${p.message}`).join("; "));
  }
  const expired = new Set(inputs.expired ?? []);
  const config = expired.size === 0
    ? parsed.config
    : { ...parsed.config, rules: parsed.config.rules.filter((r) => !expired.has(r.name)) };
  const { listeners, problems } = yield* buildPlanSteps(config, inputs.resolved, inputs.facts);
  if (problems.length > 0) {
    throw new Error(problems.map((p) => `${p.where}: ${p.message}`).join("; "));
  }
  return { config, listeners, reuse: parsed.reuse };
}
