/**
 * Reads, validates and plans a rule file: what `run` and `check` share.
 *
 * @module
 */
import { type ConfigProblem, parseConfig } from "../config/load.ts";
import { loadServices } from "../config/services.ts";
import type { Config } from "../config/types.ts";
import { buildPlan, type ListenerPlan, listenNames } from "../rules/plan.ts";
import { resolveNames } from "../rules/resolve.ts";

/** A rule file ready to run, or everything wrong with it. */
export type LoadedRules =
  | {
    readonly ok: true;
    readonly config: Config;
    readonly listeners: ListenerPlan[];
    readonly warnings: readonly ConfigProblem[];
  }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

/** Loads `path`: read, parse, validate, resolve listen names, plan. */
export async function loadRuleFile(path: string): Promise<LoadedRules> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (error as Error).message;
    return {
      ok: false,
      problems: [{ where: path, message: `cannot read the rule file: ${why}` }],
    };
  }
  if (text.includes("\uFFFD") && !isUtf8(await Deno.readFile(path))) {
    return {
      ok: false,
      problems: [{ where: path, message: "the rule file is not valid UTF-8" }],
    };
  }
  return await loadRuleText(text, path);
}

/** Loads rules given as text (`source` names them in messages): parse, validate, resolve, plan. */
export async function loadRuleText(text: string, source: string): Promise<LoadedRules> {
  const parsed = parseConfig(text, source, loadServices());
  if (!parsed.ok) return parsed;
  const resolved = await resolveNames(listenNames(parsed.config));
  const { listeners, problems } = buildPlan(parsed.config, resolved);
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    config: parsed.config,
    listeners,
    warnings: parsed.warnings,
  };
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}
