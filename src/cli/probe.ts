/**
 * `check --probe`: try every TCP target of every pass rule the way a session
 * would (a TCP connect within the rule's connect_timeout, through the same
 * dial step, from the rule's `source`; a rule that sends PROXY headers sends
 * the header of a connection relaying no client) and report what happened.
 * What an operator runs before switching DNS to the new addresses.
 *
 * @module
 */
import type { PassRule } from "../config/types.ts";
import { type Dialer, DialTimeout, systemDialer } from "../relay/dial.ts";
import { describeConnectError } from "../relay/errors.ts";
import { localHeader } from "../relay/proxy_protocol.ts";
import { formatTarget, type ListenerPlan, type SourcePlan, type Target } from "../rules/plan.ts";

/** The outcome of probing one target. */
export interface ProbeResult {
  readonly rule: string;
  readonly target: string;
  readonly result: "ok" | "refused" | "timeout" | "unresolvable" | "unreachable" | "skipped";
  /** Milliseconds to connect (ok) or to fail; null when skipped. */
  readonly latencyMs: number | null;
  readonly detail: string;
}

const CONCURRENCY = 32;

/** Every distinct (rule, target) pair of the plan's pass rules, in rule order. */
export function probeTargets(
  listeners: readonly ListenerPlan[],
): { rule: PassRule; target: Target; source: SourcePlan | null }[] {
  const seen = new Set<string>();
  const targets: { rule: PassRule; target: Target; source: SourcePlan | null; order: number }[] =
    [];
  for (const listener of listeners) {
    for (const { rule, targets: ruleTargets, source } of listener.bindings) {
      if (rule.action !== "pass") continue;
      for (const target of ruleTargets) {
        const key = `${rule.name} ${formatTarget(target)}`;
        if (seen.has(key)) continue;
        seen.add(key);
        targets.push({ rule, target, source, order: rule.index });
      }
    }
  }
  return targets.sort((a, b) => a.order - b.order);
}

/** Probes one target, connecting the way a session would (from `source`, if any). */
export async function probe(
  rule: PassRule,
  target: Target,
  source: SourcePlan | null = null,
  dialer: Dialer = systemDialer,
): Promise<ProbeResult> {
  const text = formatTarget(target);
  if (!rule.protocols.includes("tcp")) {
    return {
      rule: rule.name,
      target: text,
      result: "skipped",
      latencyMs: null,
      detail: "UDP only: cannot be probed without knowing its protocol",
    };
  }
  const started = performance.now();
  try {
    const conn = await dialer.tcp(target, rule.connectTimeoutMs, new AbortController(), source);
    const latencyMs = performance.now() - started;
    try {
      if (rule.proxyProtocol) await conn.write(localHeader(rule.proxyProtocol));
    } catch {
      // The target closed at once: the connect itself is what the probe asks about.
    } finally {
      conn.close();
    }
    return { rule: rule.name, target: text, result: "ok", latencyMs, detail: "connected" };
  } catch (error) {
    const latencyMs = performance.now() - started;
    const timedOut = error instanceof DialTimeout;
    const detail = timedOut
      ? `no answer within ${error.message.replace(/^.* after /, "")}`
      : describeConnectError(error);
    const result = timedOut
      ? "timeout"
      : error instanceof Deno.errors.ConnectionRefused
      ? "refused"
      : /^cannot resolve/.test(detail)
      ? "unresolvable"
      : "unreachable";
    return { rule: rule.name, target: text, result, latencyMs, detail };
  }
}

/** Probes every target, a few at a time; results in rule order. */
export async function probeAll(listeners: readonly ListenerPlan[]): Promise<ProbeResult[]> {
  const targets = probeTargets(listeners);
  const results: ProbeResult[] = new Array(targets.length);
  let next = 0;
  const worker = async () => {
    while (next < targets.length) {
      const i = next++;
      results[i] = await probe(targets[i].rule, targets[i].target, targets[i].source);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, targets.length) }, worker));
  return results;
}
