/** Loading rule-file text in unit tests. */
import { formatProblem, parseConfig } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";
import type { Config } from "../../src/config/types.ts";

const services = builtInServices();

/** Parses rule-file text that must be valid; throws with every problem otherwise. */
export function loadRules(text: string): Config {
  const result = parseConfig(text, "rules.toml", services);
  if (!result.ok) throw new Error(result.problems.map(formatProblem).join("\n"));
  return result.config;
}
