/**
 * Translating a parsed barefootd.conf into a commented portbounce rule file,
 * the record of the move: rule order is kept (first match wins in both), the
 * file's comments stay beside the rules they annotate, and rules are named
 * after where they listen. Whatever has no equivalent becomes a
 * `# not translated: ...` comment and a warning, never silently dropped; a
 * rule whose clients or listen address cannot be expressed is kept as a
 * comment as a whole rather than translated more loosely. Pure.
 *
 * @module
 */
import type { ServiceTable } from "../config/services.ts";
import type { BarefootFile, Block, Statement } from "./parse.ts";
import { intersect, type ListenEntry, listenText, mergeEntries } from "./addresses.ts";
import { type MonitorDraft, readMonitor } from "./monitors.ts";
import {
  commentLines,
  type ImportWarning,
  Notes,
  NotTranslatable,
  toml,
  tomlList,
} from "./notes.ts";
import { type Protocol, readRule, type RuleDraft } from "./rules.ts";
import { translateSettings } from "./settings.ts";

export type { ImportWarning } from "./notes.ts";

/** The rule file and what could not be carried over. */
export interface Translation {
  readonly toml: string;
  readonly warnings: readonly ImportWarning[];
}

/** A block of the file on its way out, in file order. */
type Item =
  | { kind: "rule"; draft: RuleDraft; name: string }
  | { kind: "monitor"; draft: MonitorDraft; rules: string[] }
  | { kind: "kept"; block: Block; lines: string[] };

/** Translates a parsed file into TOML text with warnings. */
export function translateBarefoot(
  file: BarefootFile,
  source: string,
  services: ServiceTable,
): Translation {
  const notes = new Notes();
  const settings = translateSettings(file.settings, notes);
  const items: Item[] = file.blocks.map((block) => readBlock(file, block, services, notes));
  narrowBlockRules(file, items, notes);
  nameRules(items);
  applyMonitors(items, notes);
  const serverSource = applyExternals(settings.externals, items, notes);

  const out: string[] = [
    `# Translated from ${source} by portbounce import-barefoot.`,
    "# Rule order is kept: the first rule whose clients match decides, as in Barefoot.",
  ];
  if (file.header.length > 0) out.push("#", ...commentLines(file.header));
  out.push("");
  const server = [...settings.server, ...serverSource];
  if (server.length > 0) out.push("[server]", ...server, "");
  out.push("[defaults]");
  for (const [key, { value, above }] of settings.defaults) out.push(...above, `${key} = ${value}`);
  out.push("");
  if (settings.comments.length > 0) out.push(...settings.comments, "");
  for (const item of items) out.push(...emit(item), "");
  if (file.trailer.length > 0) out.push(...commentLines(file.trailer));
  const warnings = [...notes.warnings].sort((a, b) => a.line - b.line);
  return { toml: out.join("\n").trimEnd() + "\n", warnings };
}

function readBlock(file: BarefootFile, block: Block, services: ServiceTable, notes: Notes): Item {
  const title = `${block.kind}${block.action ? ` ${block.action}` : ""} { ... }`;
  if (block.kind !== "client" && block.kind !== "monitor") {
    return kept(file, block, [
      notes.notTranslated(block.line, title, `${block.kind} blocks have no portbounce equivalent`),
    ]);
  }
  try {
    return block.kind === "monitor"
      ? { kind: "monitor", draft: readMonitor(block, services, notes), rules: [] }
      : { kind: "rule", draft: readRule(block, services, notes), name: "" };
  } catch (error) {
    if (!(error instanceof NotTranslatable)) throw error;
    const what = block.kind === "client" ? `client ${block.action} { ... }, the whole rule` : title;
    return kept(file, block, [notes.notTranslated(block.line, what, error.message)]);
  }
}

/** A block written back as a comment, with its own comments and its original lines. */
function kept(file: BarefootFile, block: Block, why: string[]): Item {
  const quoted = file.lines.slice(block.line - 1, block.endLine).map((line) => `#   ${line}`);
  return { kind: "kept", block, lines: [...commentLines(block.comments), ...why, ...quoted] };
}

const passRules = (items: readonly Item[]) =>
  items.flatMap((item) =>
    item.kind === "rule" && item.draft.action === "pass" ? [{ item, draft: item.draft }] : []
  );

/**
 * A block rule only matters in front of a later pass rule: nothing else listens
 * there, and deny by default refuses the rest. Each block rule keeps the
 * protocols, addresses and ports it shares with later pass rules; one that
 * shares none becomes a comment rather than a listener (it could collide with
 * the host's own service on that port).
 */
function narrowBlockRules(file: BarefootFile, items: Item[], notes: Notes): void {
  items.forEach((item, index) => {
    if (item.kind !== "rule" || item.draft.action !== "block") return;
    const block = item.draft;
    const later = passRules(items.slice(index + 1));
    const shared: ListenEntry[] = [];
    const protocols: Protocol[] = [];
    const skipped: string[] = [];
    for (const protocol of block.protocols) {
      let found = false;
      for (const { draft: pass } of later) {
        if (!pass.protocols.includes(protocol)) continue;
        for (const mine of block.listen) {
          for (const theirs of pass.listen) {
            const both = intersect(mine, theirs);
            if (both === null) continue;
            // One UDP socket per address: a block rule cannot stand on a narrower one.
            if (protocol === "udp" && both.host !== theirs.host) {
              skipped.push(listenText(both));
              continue;
            }
            shared.push(both);
            found = true;
          }
        }
      }
      if (found) protocols.push(protocol);
    }
    if (protocols.length === 0) {
      const listen = block.listen.map(listenText).join(", ");
      notes.warnings.push({
        line: block.block.line,
        message:
          `client block { } on ${listen} kept as a comment: no later pass rule listens there, so deny by default already refuses these clients`,
      });
      items[index] = kept(file, block.block, [
        `# client block (line ${block.block.line}) on ${listen}: deny by default already refuses these clients,`,
        "# as no later pass rule listens there; portbounce binds nothing for it.",
      ]);
      return;
    }
    const before = block.listen.map(listenText).join(", ");
    block.listen = mergeEntries(shared);
    const after = block.listen.map(listenText).join(", ");
    if (after !== before) {
      block.added.push(`# to: ${before} narrowed to where later pass rules listen`);
    }
    if (skipped.length > 0) {
      block.added.push(
        notes.notTranslated(
          block.block.line,
          `the UDP part on ${[...new Set(skipped)].join(", ")}`,
          "a pass rule's UDP socket listens on all addresses there; one socket cannot carry a narrower rule",
        ),
      );
    }
    if (!block.protocolGiven) {
      block.protocols = protocols;
      block.added.push(`# protocol: those of the pass rules it stands before`);
    }
  });
}

/** Names from where rules listen: `203.0.113.10-http`, `block-any-22`, then `-2`, `-3`. */
function nameRules(items: Item[]): void {
  const taken = new Set<string>();
  for (const item of items) {
    if (item.kind !== "rule") continue;
    const base = `${item.draft.action === "block" ? "block-" : ""}${item.draft.label}`
      .replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[^A-Za-z0-9]+/, "").slice(0, 58) || "rule";
    let name = base;
    for (let n = 2; taken.has(name); n++) name = `${base}-${n}`;
    taken.add(name);
    item.name = name;
  }
}

/** Each monitor's alarms go on the pass rules whose listen addresses it watches. */
function applyMonitors(items: Item[], notes: Notes): void {
  for (const item of items) {
    if (item.kind !== "monitor") continue;
    const monitor = item.draft;
    for (const { item: rule, draft } of passRules(items)) {
      if (rule.kind !== "rule") continue;
      const watched = monitor.listen === null ||
        monitor.listen.some((m) => draft.listen.some((l) => intersect(m, l) !== null));
      if (!watched) continue;
      for (const { key, line } of monitor.keys) {
        if (draft.added.some((added) => added.startsWith(`${key} =`))) continue;
        draft.added.push(line);
      }
      item.rules.push(rule.name);
    }
    if (item.rules.length === 0) {
      notes.warnings.push({
        line: monitor.block.line,
        message: "not translated: monitor { ... } (it watches no translated pass rule)",
      });
    }
  }
}

type External = { statement: Statement; value: string; kind: "4" | "6" | "interface" };

/**
 * `external:` as the source address of outgoing connections: `[server] source`
 * when one address suits every target, else each pass rule's `source` by its
 * target's family. Returns the `[server]` lines.
 */
function applyExternals(statements: readonly Statement[], items: Item[], notes: Notes): string[] {
  const usable: External[] = [];
  for (const statement of statements) {
    const value = statement.values[0];
    const text = `external: ${statement.values.join(" ")}`;
    if (statement.values.length !== 1) {
      notes.notTranslated(statement.line, text, "expected one address or interface");
    } else if (value.includes(":")) usable.push({ statement, value, kind: "6" });
    else if (/^[\d.]+$/.test(value)) usable.push({ statement, value, kind: "4" });
    else if (/\.[A-Za-z]{2,}$/.test(value)) {
      notes.notTranslated(
        statement.line,
        text,
        "a host name; portbounce takes an address or an interface name as source",
      );
    } else usable.push({ statement, value, kind: "interface" });
  }
  const first = (kind: External["kind"]) => usable.find((e) => e.kind === kind);
  const chosen = [first("4"), first("6")].filter((e) => e !== undefined);
  if (chosen.length === 0 && first("interface")) chosen.push(first("interface")!);
  for (const extra of usable.filter((e) => !chosen.includes(e))) {
    notes.notTranslated(
      extra.statement.line,
      `external: ${extra.value}`,
      `portbounce leaves from one source per address family; using ${
        chosen.map((c) => c.value).join(" and ")
      } (Barefoot's external.rotation: none)`,
    );
  }
  if (chosen.length === 0) return [];
  const line = (e: External) =>
    `source = ${toml(e.kind === "6" ? `[${e.value}]` : e.value)} # external: ${e.value}`;
  const passes = passRules(items).filter(({ draft }) => draft.source === null);
  const fits = (e: External, family: 4 | 6 | null) =>
    e.kind === "interface" || family === null || String(family) === e.kind;
  if (chosen.length === 1 && passes.every(({ draft }) => fits(chosen[0], draft.target!.family))) {
    return [...commentLines(chosen[0].statement.comments), line(chosen[0])];
  }
  for (const { draft } of passes) {
    const family = draft.target!.family;
    const match = chosen.find((e) => family !== null && String(family) === e.kind);
    if (match) draft.added.push(line(match));
    else {
      draft.added.push(
        `# external: ${chosen.map((c) => c.value).join(", ")}: none for this target (${
          family === null ? "a host name" : `IPv${family}`
        }); set source by hand if it must leave from a given address`,
      );
    }
  }
  return [];
}

function emit(item: Item): string[] {
  if (item.kind === "kept") return item.lines;
  if (item.kind === "monitor") {
    const block = item.draft.block;
    return [
      ...commentLines(block.comments),
      `# barefootd.conf line ${block.line}: monitor, alarms on ${
        item.rules.join(", ") || "no rule"
      }`,
      ...commentLines(block.innerComments),
      ...item.draft.comments,
    ];
  }
  const rule = item.draft;
  const block = rule.block;
  const lines = [
    ...commentLines(block.comments),
    `# barefootd.conf line ${block.line}: client ${rule.action}`,
    ...commentLines(block.innerComments),
    "[[rule]]",
    `name = ${toml(item.name)}`,
  ];
  if (rule.action === "block") lines.push('action = "block"');
  lines.push(
    `protocol = ${tomlList(rule.protocols)}${
      rule.protocolGiven || rule.action === "block" ? "" : " # Barefoot: no protocol: means both"
    }`,
  );
  const listen = rule.listen.map(listenText);
  lines.push(`listen = ${listen.length === 1 ? toml(listen[0]) : tomlList(listen)}`);
  if (rule.from !== null) lines.push(`from = ${tomlList(rule.from)}`);
  if (rule.target !== null) lines.push(`bounce_to = ${toml(rule.target.text)}`);
  if (rule.source !== null) {
    const text = rule.source.includes(":") ? `[${rule.source}]` : rule.source;
    lines.push(`source = ${toml(text)} # redirect from: ${rule.source}`);
  }
  lines.push(`log = ${tomlList(rule.log)}`, ...rule.keys);
  for (const key of rule.protocolKeys) {
    if (rule.protocols.includes(key.protocol)) lines.push(key.line);
  }
  lines.push(...rule.added);
  return lines;
}
