/**
 * One Barefoot `client pass|block { }` block read into a rule draft: what the
 * rule file will say, before the whole-file steps (naming, the protocols of
 * block rules, alarms from monitors, source addresses) finish it. Pure.
 *
 * @module
 */
import type { ServiceTable } from "../config/services.ts";
import { BarefootSyntaxError, type Block, type Statement } from "./parse.ts";
import {
  addressAndPorts,
  clientNetworks,
  listenAddresses,
  type ListenEntry,
  target,
  type TargetAddress,
} from "./addresses.ts";
import { type Notes, NotTranslatable, toml } from "./notes.ts";
import { seconds } from "./settings.ts";

/** `tcp`, `udp`. */
export type Protocol = "tcp" | "udp";

/** A timeout key that applies to one protocol only. */
interface ProtocolKey {
  readonly protocol: Protocol;
  readonly line: string;
}

/** A client block on its way to a `[[rule]]`. */
export interface RuleDraft {
  readonly block: Block;
  readonly action: "pass" | "block";
  listen: ListenEntry[];
  /** The listen address and port as written, for the rule's name: `203.0.113.10-http`. */
  readonly label: string;
  readonly from: string[] | null;
  readonly target: TargetAddress | null;
  protocols: Protocol[];
  readonly protocolGiven: boolean;
  readonly log: string[];
  /** Keys and `# not translated` comments, in the order of the block. */
  readonly keys: string[];
  /** Keys for one protocol, written only if the rule has it. */
  readonly protocolKeys: ProtocolKey[];
  /** `redirect from:`, the rule's own outgoing address. */
  readonly source: string | null;
  /** Lines the whole-file steps add (alarms, source). */
  readonly added: string[];
}

const LOG_EVENTS: Record<string, string> = {
  connect: "connect",
  disconnect: "disconnect",
  data: "data",
  iooperation: "data",
  error: "error",
};

/** A bandwidth in bytes per second, in the largest binary unit that divides it. */
function rate(bytes: number): string {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (bytes % size === 0) return `${bytes / size}${unit}/s`;
  }
  return `${bytes}B/s`;
}

function count(s: Statement): number {
  const n = Number(s.values[0]);
  if (s.values.length !== 1 || !Number.isInteger(n) || n < 0) {
    throw new BarefootSyntaxError(s.line, `${s.keyword}: expected a whole number`);
  }
  return n;
}

function throttle(s: Statement): string {
  const match = /^(\d+)\/(\d+)$/.exec(s.values.join(""));
  if (!match || Number(match[1]) < 1 || Number(match[2]) < 1) {
    throw new BarefootSyntaxError(s.line, `${s.keyword}: expected COUNT/SECONDS, e.g. 10/1`);
  }
  return `${match[1]}/${match[2]}s`;
}

/**
 * Reads a client block; throws {@linkcode NotTranslatable} when the rule as a
 * whole cannot be expressed.
 */
export function readRule(block: Block, services: ServiceTable, notes: Notes): RuleDraft {
  const action = block.action!;
  const keys: string[] = [];
  const protocolKeys: ProtocolKey[] = [];
  let listen: { entries: ListenEntry[]; label: string } | undefined;
  let from: string[] | null = null;
  let bounceTo: TargetAddress | null = null;
  let protocols: Protocol[] = ["tcp", "udp"];
  let source: string | null = null;
  const log: string[] = [];
  let stateKey = "from";
  let limited = false;
  for (const s of block.statements) {
    const text = `${s.keyword}: ${s.values.join(" ")}`;
    switch (s.keyword) {
      case "from":
        from = clientNetworks(s);
        break;
      case "to":
        listen = listenAddresses(s, services);
        break;
      case "bounce to":
        bounceTo = target(s, services);
        break;
      case "protocol": {
        const names = s.values.map((v) => v.toLowerCase());
        if (names.length === 0 || names.some((p) => p !== "tcp" && p !== "udp")) {
          throw new BarefootSyntaxError(s.line, `protocol: expected tcp and/or udp`);
        }
        protocols = [...new Set(names as Protocol[])];
        break;
      }
      case "log":
        for (const value of s.values) {
          const event = value.toLowerCase() === "connect" && action === "block"
            ? "block"
            : LOG_EVENTS[value.toLowerCase()];
          if (event) {
            if (!log.includes(event)) log.push(event);
          } else {
            keys.push(notes.notTranslated(s.line, `log: ${value}`, "no such portbounce log event"));
          }
        }
        break;
      case "session.max":
        keys.push(`max_sessions = ${count(s)}`);
        limited = true;
        break;
      case "session.throttle":
        keys.push(`throttle = ${toml(throttle(s))}`);
        limited = true;
        break;
      case "session.state.key":
        stateKey = s.values[0]?.toLowerCase() ?? "";
        if (stateKey !== "from") {
          keys.push(
            notes.notTranslated(
              s.line,
              text,
              "portbounce keys client state by client address only",
            ),
          );
        }
        break;
      case "session.state.max":
        if (stateKey === "from") {
          keys.push(`max_sessions_per_client = ${count(s)}`);
          limited = true;
        } else {
          keys.push(notes.notTranslated(s.line, text, "its state key is not the client address"));
        }
        break;
      case "timeout.connect":
        keys.push(`connect_timeout = "${seconds(s)}s"`);
        break;
      case "timeout.io":
      case "timeout.io.tcp":
      case "timeout.io.udp": {
        const n = seconds(s);
        if (s.keyword !== "timeout.io.udp") {
          protocolKeys.push({ protocol: "tcp", line: `idle_timeout = "${n}s" # ${text}` });
        }
        if (s.keyword !== "timeout.io.tcp") {
          protocolKeys.push({
            protocol: "udp",
            line: n > 0
              ? `udp_idle_timeout = "${n}s" # ${text}`
              : `# ${text}: a UDP session without idle timeout would never end; keeping the default`,
          });
        }
        break;
      }
      case "session.state.throttle":
        keys.push(
          notes.notTranslated(s.line, text, "portbounce throttles per rule, not per client"),
        );
        break;
      case "session.inheritable":
        keys.push(
          notes.notTranslated(
            s.line,
            text,
            "a session always keeps the rule it matched in portbounce",
          ),
        );
        break;
      case "bandwidth": {
        const bytes = count(s);
        if (bytes > 0) keys.push(`bandwidth = ${toml(rate(bytes))} # ${text} (bytes per second)`);
        else keys.push(`# ${text}: no limit`);
        break;
      }
      case "redirect from": {
        const { address, ports } = addressAndPorts(s);
        if (ports !== null) {
          keys.push(
            notes.notTranslated(s.line, `${text} (the port)`, "the system picks the source port"),
          );
        }
        source = address;
        break;
      }
      default:
        keys.push(notes.notTranslated(s.line, text, "no portbounce equivalent"));
    }
  }
  if (!listen) throw new NotTranslatable("the rule has no to: (the address Barefoot listens on)");
  if (action === "pass" && bounceTo === null) {
    throw new NotTranslatable("a pass rule without bounce to: has nowhere to send clients");
  }
  // Barefoot counts limit refusals as blocks; make them visible in the log.
  if (limited && !log.includes("block")) log.push("block");
  return {
    block,
    action,
    listen: listen.entries,
    label: listen.label,
    from,
    target: action === "pass" ? bounceTo : null,
    protocols,
    protocolGiven: block.statements.some((s) => s.keyword === "protocol"),
    log,
    keys,
    protocolKeys,
    source,
    added: [],
  };
}
