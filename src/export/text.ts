/**
 * What both export formats begin with: where the rules came from, the
 * command that made them, one line per rule, and what the router will not
 * do of them. Pure.
 *
 * @module
 */
import { describeDestination, type ExportModel, type ExportRule } from "./model.ts";

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
}

/** `web (#1): tcp 203.0.113.10:80 from any -> 192.0.2.10:80` */
export function ruleSummary(exported: ExportRule): string {
  const { rule } = exported;
  const listen = [
    ...new Set(
      exported.matches.map((m) =>
        `${m.protocol} ${describeDestination(m.destination)}:${
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
      `${t.address}${t.name ? ` (${t.name})` : ""}${
        t.ports === null
          ? ""
          : `:${
            t.ports.first === t.ports.last ? t.ports.first : `${t.ports.first}-${t.ports.last}`
          }`
      }`
    ).join(", ")
    : "block";
  return `${rule.name} (#${rule.index}): ${listen} from ${from} -> ${to}`;
}

/** The comment block both formats start with. */
export function header(
  format: string,
  options: ExportOptions,
  model: ExportModel & { ok: true },
): string[] {
  const lines = [
    `# Generated from ${options.source} by portbounce ${options.version} (${format}).`,
    `# Command: ${options.command}`,
    "#",
    options.masquerade
      ? "# --masquerade: targets see this router's address, so their replies come back through it."
      : "# Targets see the real client address: they must route their replies back through this router.",
    "# The router forwards packets and never connects to targets itself: connect, idle and stall",
    "# timeouts, health checks and PROXY headers of the rule file do not apply here.",
    options.interface ? `# Only packets arriving on ${options.interface}.` : null,
    "#",
    "# Rules, in file order (the first that matches a packet decides, as in portbounce):",
    ...model.rules.map((r) => `#   ${ruleSummary(r)}`),
  ].filter((line): line is string => line !== null);
  const notDone = model.rules.flatMap((r) =>
    r.notDone.map((what) => `#   ${r.rule.name} (#${r.rule.index}): ${what}`)
  );
  if (notDone.length > 0) lines.push("#", "# Not done by the router:", ...notDone);
  lines.push("");
  return lines;
}

/** What the router will not do, one line per rule and setting (printed on stderr too). */
export function notDoneLines(model: ExportModel & { ok: true }): string[] {
  return model.rules.flatMap((r) =>
    r.notDone.map((what) => `${r.rule.name} (#${r.rule.index}): ${what}`)
  );
}
