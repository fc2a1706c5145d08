/**
 * `portbounce forward`: ad hoc forwarding with no rule file. Each SPEC becomes
 * a `[[rule]]` of a generated rule file, which goes through the same
 * validation and engine as any rule file; `--print-config` prints that file,
 * to graduate an ad hoc session into a rule file.
 *
 * @module
 */
import { stringify } from "smol-toml";
import { formatProblem } from "../config/load.ts";
import { LOG_FORMATS, LOG_LEVELS, targetsText } from "../config/types.ts";
import type { Engine } from "../server/engine.ts";
import {
  choice,
  durationOption,
  parseCommandArgs,
  shellQuote,
  UsageError,
  workersOption,
} from "./args.ts";
import type { WorkerCount } from "../config/types.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { loadRuleText } from "../server/rule_file.ts";
import { runDaemon } from "../daemon/daemon.ts";

/** Help for `portbounce forward`. */
export const FORWARD_HELP = `Usage: portbounce forward [options] SPEC...

Forwards without a rule file. SPEC is [ADDR:]PORT=HOST:PORT[,HOST:PORT...], e.g.
  8080=example.com:80            127.0.0.1:8080 to example.com:80
  0.0.0.0:2222=10.0.0.5:ssh      every IPv4 address, port 2222, to 10.0.0.5:22
  [::1]:5353=[::1]:53            IPv6 in brackets
  8000-8009=backend:9000-9009    port ranges map 1:1
  8080=a:80,b:80                 two targets: b when a does not answer (see --balance)
ADDR defaults to 127.0.0.1 (this machine only), not every interface.

Options:
      --udp               forward UDP instead of TCP
      --both              forward TCP and UDP
      --from CIDR         accept only clients from CIDR (repeatable; default: any)
      --balance MODE      with several targets: failover (default), round-robin,
                          least-sessions or source-hash
      --source ADDR       connect to targets from ADDR (an address or an interface name)
      --proxy-protocol V  send a PROXY protocol header (v1 or v2) to the target first
      --bandwidth RATE    limit each direction to RATE, e.g. 10MiB/s
      --drain-timeout DUR how long sessions may finish when stopping (default 30s)
      --log-format FMT    text or json
      --log-level LEVEL   debug, info, warning or error
      --ready-file PATH   written (JSON, bound addresses) once every listener is bound
      --pid-file PATH     write the process id to PATH; removed again on exit
      --exit-after DUR    stop (as on SIGTERM) after DUR, e.g. "5m"
      --workers N         isolates accepting TCP connections: a number or "auto" (Linux)
      --print-config      print the equivalent rule file and exit
  -h, --help              this help

Stops on SIGTERM/SIGINT: TCP sessions may finish for --drain-timeout, UDP
flows end once quiet for a second; a second signal stops at once.
Exit codes: 0 stopped, 1 runtime failure, 2 bad SPEC or usage, 3 cannot bind.`;

/** The arguments of `forward` that shape the generated rules. */
export interface ForwardRequest {
  readonly specs: readonly string[];
  readonly protocols: readonly ("tcp" | "udp")[];
  readonly from: readonly string[];
  /** `--drain-timeout` as given, if given. */
  readonly drainTimeout?: string;
  /** `--workers` as given, if given. */
  readonly workers?: WorkerCount;
  readonly balance?: string;
  readonly source?: string;
  readonly proxyProtocol?: string;
  readonly bandwidth?: string;
}

/** Splits a SPEC into its listen and target halves, or says why it cannot. */
export function parseSpec(spec: string): { listen: string; targets: string[] } {
  const equals = spec.indexOf("=");
  if (equals <= 0 || equals === spec.length - 1 || spec.indexOf("=", equals + 1) !== -1) {
    throw new UsageError(
      `forward: "${spec}" is not a SPEC; expected [ADDR:]PORT=HOST:PORT, e.g. 8080=example.com:80`,
    );
  }
  const left = spec.slice(0, equals);
  const targets = spec.slice(equals + 1).split(",");
  // A bare port (or range, or service name) listens on loopback only.
  const listen = left.includes(":") ? left : `127.0.0.1:${left}`;
  return { listen, targets };
}

/** The rule file a forward request means, as TOML text. */
export function forwardConfig(request: ForwardRequest): string {
  const rules = request.specs.map((spec, i) => {
    const { listen, targets } = parseSpec(spec);
    return {
      name: `forward-${i + 1}`,
      protocol: request.protocols.length === 1 ? request.protocols[0] : [...request.protocols],
      listen,
      ...(request.from.length > 0 ? { from: [...request.from] } : {}),
      bounce_to: targets.length === 1 ? targets[0] : targets,
      ...(request.balance !== undefined ? { balance: request.balance } : {}),
      ...(request.source !== undefined ? { source: request.source } : {}),
      ...(request.proxyProtocol !== undefined ? { proxy_protocol: request.proxyProtocol } : {}),
      ...(request.bandwidth !== undefined ? { bandwidth: request.bandwidth } : {}),
    };
  });
  const words = [
    ...(request.protocols.length === 2
      ? ["--both"]
      : request.protocols[0] === "udp"
      ? ["--udp"]
      : []),
    ...request.from.flatMap((cidr) => ["--from", cidr]),
    ...(request.drainTimeout !== undefined ? ["--drain-timeout", request.drainTimeout] : []),
    ...(request.workers !== undefined ? ["--workers", String(request.workers)] : []),
    ...(request.balance !== undefined ? ["--balance", request.balance] : []),
    ...(request.source !== undefined ? ["--source", request.source] : []),
    ...(request.proxyProtocol !== undefined ? ["--proxy-protocol", request.proxyProtocol] : []),
    ...(request.bandwidth !== undefined ? ["--bandwidth", request.bandwidth] : []),
    ...request.specs,
  ];
  const header = `# Generated by: portbounce forward ${words.map(shellQuote).join(" ")}\n\n`;
  const server = {
    ...(request.drainTimeout !== undefined ? { drain_timeout: request.drainTimeout } : {}),
    ...(request.workers !== undefined ? { workers: request.workers } : {}),
  };
  return header +
    stringify({ ...(Object.keys(server).length > 0 ? { server } : {}), rule: rules });
}

/** `rule "forward-2" (rule #2)` in a message becomes `SPEC "9090=host:90"`. */
function nameSpecs(message: string, specs: readonly string[]): string {
  return message.replace(
    /rule "forward-(\d+)" \(rule #\d+\)/g,
    (_, n) => `SPEC "${specs[Number(n) - 1]}"`,
  );
}

/** `listening 127.0.0.1:8080 -> example.com:80 (tcp)`, one per listener. */
function describe(engine: Engine): string[] {
  return engine.listenerStates().flatMap((listener) => {
    const targets = engine.rules.filter((rule) => listener.rules.includes(rule.name));
    return targets.map((rule) =>
      `${listener.bound} -> ${
        rule.action === "pass" ? targetsText(rule) : "block"
      } (${listener.protocol})`
    );
  });
}

/** Runs `portbounce forward ARGS`; resolves to the exit code. */
export async function forwardCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs("forward", args, {
    udp: { type: "boolean" },
    both: { type: "boolean" },
    from: { type: "string", multiple: true },
    "log-format": { type: "string" },
    "log-level": { type: "string" },
    "ready-file": { type: "string" },
    "exit-after": { type: "string" },
    "drain-timeout": { type: "string" },
    balance: { type: "string" },
    source: { type: "string" },
    "proxy-protocol": { type: "string" },
    bandwidth: { type: "string" },
    "pid-file": { type: "string" },
    workers: { type: "string" },
    "print-config": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (values.help) {
    console.log(FORWARD_HELP);
    return ExitCode.ok;
  }
  if (positionals.length === 0) {
    throw new UsageError("forward: give at least one SPEC, e.g. 8080=example.com:80");
  }
  if (values.udp && values.both) {
    throw new UsageError("forward: --udp and --both exclude each other");
  }
  const format = choice("--log-format", values["log-format"], LOG_FORMATS);
  const level = choice("--log-level", values["log-level"], LOG_LEVELS);
  const exitAfterMs = durationOption("--exit-after", values["exit-after"]);
  const drainTimeout = values["drain-timeout"];
  durationOption("--drain-timeout", drainTimeout, { allowZero: true });
  const request: ForwardRequest = {
    specs: positionals,
    protocols: values.both ? ["tcp", "udp"] : values.udp ? ["udp"] : ["tcp"],
    from: values.from ?? [],
    drainTimeout,
    workers: workersOption(values.workers),
    balance: values.balance,
    source: values.source,
    proxyProtocol: values["proxy-protocol"],
    bandwidth: values.bandwidth,
  };
  const text = forwardConfig(request);
  const loaded = await loadRuleText(text, "command line");
  if (!loaded.ok) {
    for (const problem of loaded.problems) {
      console.error(`portbounce forward: ${nameSpecs(problem.message, request.specs)}`);
    }
    return ExitCode.usage;
  }
  if (values["print-config"]) {
    console.log(text.trimEnd());
    return ExitCode.ok;
  }
  for (const warning of loaded.warnings) console.error(`warning: ${formatProblem(warning)}`);
  return await runDaemon(loaded, {
    overrides: { format, level },
    readyFile: values["ready-file"],
    pidFile: values["pid-file"],
    exitAfterMs,
    describe,
  });
}
