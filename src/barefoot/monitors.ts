/**
 * Barefoot's `monitor { }` blocks as portbounce alarms, where the meaning
 * maps: "no data for S seconds" becomes `alarm_quiet` (no new session for that
 * long) and "N disconnects in S seconds" becomes `alarm_errors`. Pure.
 *
 * @module
 */
import type { ServiceTable } from "../config/services.ts";
import type { Block } from "./parse.ts";
import { listenAddresses, type ListenEntry } from "./addresses.ts";
import { type Notes, NotTranslatable, toml } from "./notes.ts";

/** A monitor block read: where it watches and the alarm keys it gives. */
export interface MonitorDraft {
  readonly block: Block;
  /** The listen entries it watches; null watches every rule. */
  readonly listen: ListenEntry[] | null;
  /** `alarm_quiet = ...` and `alarm_errors = ...` lines, with what they came from. */
  readonly keys: { key: string; line: string }[];
  /** Comments for what did not map. */
  readonly comments: string[];
}

/** Reads a monitor block; throws {@linkcode NotTranslatable} when nothing in it maps. */
export function readMonitor(block: Block, services: ServiceTable, notes: Notes): MonitorDraft {
  let listen: ListenEntry[] | null = null;
  const keys: { key: string; line: string }[] = [];
  const comments: string[] = [];
  for (const s of block.statements) {
    const value = s.values.join(" ");
    const text = `${s.keyword}: ${value}`;
    if (s.keyword === "to") {
      const anywhere = /^0\/0$/.test(value.trim()) || value.trim() === "0.0.0.0/0";
      listen = anywhere ? null : listenAddresses(s, services).entries;
      continue;
    }
    if (s.keyword === "from") {
      if (!/^0\/0$|^0\.0\.0\.0\/0$/.test(value.trim())) {
        comments.push(`# ${text}: portbounce alarms watch all of a rule's clients`);
      }
      continue;
    }
    if (s.keyword === "protocol") continue;
    const data = /^alarm\.data(\..+)?$/.test(s.keyword) &&
      /^(?:(<|lt|=|eq)\s*)?(\d+)\s+in\s+(\d+)$/i.exec(value.trim());
    if (data && Number(data[2]) === 0 && Number(data[3]) > 0) {
      keys.push({
        key: "alarm_quiet",
        line: `alarm_quiet = ${
          toml(`${data[3]}s`)
        } # monitor line ${s.line}: ${text} (portbounce: no new session for that long)`,
      });
      continue;
    }
    const disconnects = /^alarm\.disconnect(\..+)?$/.test(s.keyword) &&
      /^(\d+)(?:\/\d+)?\s+in\s+(\d+)$/.exec(value.trim());
    if (disconnects && Number(disconnects[1]) > 0 && Number(disconnects[2]) > 0) {
      keys.push({
        key: "alarm_errors",
        line: `alarm_errors = ${
          toml(`${disconnects[1]}/${disconnects[2]}s`)
        } # monitor line ${s.line}: ${text} (portbounce counts failed sessions)`,
      });
      continue;
    }
    comments.push(
      notes.notTranslated(
        s.line,
        text,
        /^alarm\.data/.test(s.keyword)
          ? "portbounce alarms when no new session comes, not on a volume of data"
          : "no portbounce alarm of this kind",
      ),
    );
  }
  if (keys.length === 0) throw new NotTranslatable("nothing in it maps to a portbounce alarm");
  return { block, listen, keys, comments };
}
