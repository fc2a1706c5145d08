/**
 * What both export formats begin with: where the rules came from, the
 * command that made them, one line per rule, and what the router will not
 * do of them. Pure.
 *
 * @module
 */
import { isInterfaceName } from "../config/network.ts";
import { describeDestination, type ExportModel, type ExportRule } from "./model.ts";

/**
 * Text made safe for a `#` comment of nft and pf.conf: control characters
 * (a line break would end the comment and start a statement), line and
 * paragraph separators and the backslash (a backslash before a line break
 * continues the comment onto the next line in pf.conf) are written as
 * `\xNN` or `\u{NNNN}`, so the comment stays one line and says what was there.
 */
export function commentText(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex -- control characters are what is escaped
    /[\x00-\x1f\x7f-\x9f\u2028\u2029\\]/g,
    (c) => {
      const code = c.charCodeAt(0);
      return code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u{${code.toString(16)}}`;
    },
  );
}

/**
 * An interface name as nft and pf.conf are to read it. The CLI and the rule
 * file accept only such names; anything else here is a bug, refused rather
 * than written.
 */
export function interfaceName(name: string): string {
  if (!isInterfaceName(name)) {
    throw new Error(`export: "${commentText(name)}" is not an interface name`);
  }
  return name;
}

/** A comment line: `# ` and the text made safe. */
export function comment(text: string, indent = ""): string {
  return `${indent}# ${commentText(text)}`;
}

/** How the export was asked for. */
export interface ExportOptions {
  /** The rule file. */
  readonly source: string;
  readonly version: string;
  /** The command line, as typed. */
  readonly command: string;
  /** The nftables table (`portbounce`). */
  readonly table: string;
  /** Source-NAT to the router's address toward the targets. */
  readonly masquerade: boolean;
  /** Only packets arriving on this interface. */
  readonly interface: string | null;
  /** Rules left out because their `until` has passed, one line each. */
  readonly ended?: readonly string[];
}

/** `web (#1): tcp 203.0.113.10:80 from any -> 192.0.2.10:80` */
export function ruleSummary(exported: ExportRule): string {
  const { rule } = exported;
  const listen = [
    ...new Set(
      exported.matches.map((m) =>
        `${m.protocol} ${bracketed(describeDestination(m.destination))}:${
          m.ports.first === m.ports.last ? m.ports.first : `${m.ports.first}-${m.ports.last}`
        }`
      ),
    ),
  ].join(", ");
  const from = exported.from === null
    ? "any"
    : [...exported.from.v4, ...exported.from.v6].join(", ");
  const to = rule.action === "pass"
    ? exported.targets.map((t) =>
      `${t.ports === null ? t.address : bracketed(t.address)}${t.name ? ` (${t.name})` : ""}${
        t.ports === null
          ? ""
          : `:${
            t.ports.first === t.ports.last ? t.ports.first : `${t.ports.first}-${t.ports.last}`
          }`
      }`
    ).join(", ")
    : "block";
  const until = rule.until === null ? "" : ` until ${new Date(rule.until).toISOString()}`;
  return `${rule.name} (#${rule.index}): ${listen} from ${from} -> ${to}${until}`;
}

/** An IPv6 address in brackets, as before a port. */
function bracketed(text: string): string {
  return text.includes(":") ? `[${text}]` : text;
}

/** The comment block both formats start with; `routerLines` says what the router itself needs. */
export function header(
  format: string,
  options: ExportOptions,
  model: ExportModel,
  routerLines: readonly string[],
): string[] {
  const lines = [
    `Generated from ${options.source} by portbounce ${options.version} (${format}).`,
    `Command: ${options.command}`,
    "",
    options.masquerade
      ? "--masquerade: targets see this router's address, so their replies come back through it."
      : "Targets see the real client address: they must route their replies back through this router.",
    "The router forwards packets and never connects to targets itself: connect, idle and stall",
    "timeouts, health checks and PROXY headers of the rule file do not apply here.",
    options.interface ? `Only packets arriving on ${options.interface}.` : null,
    "",
    ...routerLines,
    "",
    "Rules, in file order (the first that matches a packet decides, as in portbounce):",
    ...model.rules.map((r) =>
      `  ${ruleSummary(r)}${r.problems.length > 0 ? " [LEFT OUT: see below]" : ""}`
    ),
  ].filter((line): line is string => line !== null);
  if ((options.ended ?? []).length > 0) {
    lines.push("", "Ended (until has passed), so left out as portbounce leaves them out:");
    lines.push(...options.ended!.map((line) => `  ${line}`));
  }
  const notDone = notDoneLines(model).map((line) => `  ${line}`);
  if (notDone.length > 0) lines.push("", "Not done by the router:", ...notDone);
  const leftOut = leftOutLines(model).map((line) => `  ${line}`);
  if (leftOut.length > 0) {
    lines.push(
      "",
      "LEFT OUT (--skip-unsupported): the router does not do these rules. What is known of",
      "their listen addresses and clients is refused in their place, so no later rule takes",
      "their clients:",
      ...leftOut,
    );
  }
  return [...lines.map((line) => line === "" ? "#" : comment(line)), ""];
}

/** What the router will not do, one line per rule and setting (printed on stderr too). */
export function notDoneLines(model: ExportModel): string[] {
  return model.rules.filter((r) => r.problems.length === 0).flatMap((r) =>
    r.notDone.map((what) => `${r.rule.name} (#${r.rule.index}): ${what}`)
  );
}

/** The rules left out and why, one line per problem (printed on stderr too). */
export function leftOutLines(model: ExportModel): string[] {
  return model.rules.flatMap((r) => r.problems.map((p) => `${p.where}: ${p.message}`));
}
