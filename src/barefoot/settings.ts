/**
 * Barefoot's server settings (`logoutput:`, `timeout.io:`, `external:`, ...)
 * as `[server]` and `[defaults]` lines of a portbounce rule file. `external:`
 * is only collected here: where it goes depends on the rules' targets. Pure.
 *
 * @module
 */
import { SYSLOG_FACILITIES } from "../config/types.ts";
import { BarefootSyntaxError, type Statement } from "./parse.ts";
import { commentLines, type Notes, toml, tomlList } from "./notes.ts";

/** A `[defaults]` key's value and the lines written above it. */
interface DefaultValue {
  readonly value: string;
  readonly above: readonly string[];
}

/** The settings' share of the rule file. */
export interface SettingsTranslation {
  /** `[server]` lines, comments included. */
  readonly server: string[];
  /** `[defaults]` keys in order. */
  readonly defaults: Map<string, DefaultValue>;
  /** Comments on settings that became no key. */
  readonly comments: string[];
  /** `external:` statements, in order. */
  readonly externals: Statement[];
}

/** A number of seconds, as Barefoot writes timeouts. */
export function seconds(statement: Statement): number {
  const n = Number(statement.values[0]);
  if (statement.values.length !== 1 || !Number.isInteger(n) || n < 0) {
    throw new BarefootSyntaxError(
      statement.line,
      `${statement.keyword}: expected a number of seconds`,
    );
  }
  return n;
}

/** Translates the server settings; `external:` is left to the caller. */
export function translateSettings(
  settings: readonly Statement[],
  notes: Notes,
): SettingsTranslation {
  const result: SettingsTranslation = {
    server: [],
    defaults: new Map([
      ["connect_timeout", { value: `"30s" # Barefoot's default timeout.connect`, above: [] }],
      ["udp_idle_timeout", { value: `"3600s" # Barefoot's default timeout.io.udp`, above: [] }],
      ["log", {
        value: "[] # Barefoot logs a rule's sessions only where the rule says log:",
        above: [],
      }],
    ]),
    comments: [],
    externals: [],
  };
  const outputs: string[] = [];
  const outputNotes: string[] = [];
  const facilities = new Map<string, number>();
  const setDefault = (key: string, value: string, setting: Statement) =>
    result.defaults.set(key, { value, above: commentLines(setting.comments) });

  for (const setting of settings) {
    const text = `${setting.keyword}: ${setting.values.join(" ")}`;
    const own = commentLines(setting.comments);
    switch (setting.keyword) {
      case "logoutput":
      case "errorlog": {
        const added: string[] = [];
        for (const value of setting.values) {
          const [kind, facility] = value.split("/", 2);
          let output = value;
          if (kind === "syslog") {
            output = "syslog";
            const name = (facility ?? "daemon").toLowerCase();
            if ((SYSLOG_FACILITIES as readonly string[]).includes(name)) {
              if (!facilities.has(name)) facilities.set(name, setting.line);
            } else {
              outputNotes.push(
                notes.notTranslated(setting.line, `${value}`, `"${name}" is not a syslog facility`),
              );
            }
          } else if (value !== "stderr" && value !== "stdout" && !value.includes("/")) {
            output = `./${value}`;
          }
          if (!outputs.includes(output)) {
            outputs.push(output);
            added.push(output);
          }
        }
        outputNotes.push(...own);
        if (setting.keyword === "errorlog") {
          outputNotes.push(
            `# ${text}: ${
              added.length > 0 ? `added to log (${added.join(", ")})` : "already in log"
            }; portbounce sends every event to each output, warnings and errors included`,
          );
        } else outputNotes.push(`# ${text}`);
        break;
      }
      case "debug":
        if (seconds(setting) > 0) result.server.push(...own, `log_level = "debug" # ${text}`);
        else result.comments.push(...own, `# ${text}: the default`);
        break;
      case "timeout.connect":
        setDefault("connect_timeout", `"${seconds(setting)}s" # ${text}`, setting);
        break;
      case "timeout.io":
      case "timeout.io.tcp":
      case "timeout.io.udp": {
        const n = seconds(setting);
        if (setting.keyword !== "timeout.io.udp") {
          setDefault("idle_timeout", `"${n}s" # ${text}`, setting);
        }
        if (setting.keyword !== "timeout.io.tcp") {
          if (n > 0) setDefault("udp_idle_timeout", `"${n}s" # ${text}`, setting);
          else {
            result.comments.push(
              notes.notTranslated(
                setting.line,
                text,
                "a UDP session without idle timeout would never end; keeping 3600s",
              ),
            );
          }
        }
        break;
      }
      case "udp.connectdst":
        result.comments.push(...own);
        if (setting.values[0]?.toLowerCase() === "yes") {
          result.comments.push(`# ${text}: portbounce always relays replies from the target only`);
        } else {
          result.comments.push(
            notes.notTranslated(
              setting.line,
              text,
              "portbounce always relays replies from the target only",
            ),
          );
        }
        break;
      case "external":
        result.externals.push(setting);
        break;
      case "external.protocol":
        result.comments.push(
          ...own,
          `# ${text}: portbounce connects to each target from a source of the target's family`,
        );
        break;
      case "internal":
        result.comments.push(
          ...own,
          notes.notTranslated(
            setting.line,
            text,
            "Barefoot rejects it too: listen addresses come from the rules' to:",
          ),
        );
        break;
      default:
        result.comments.push(
          ...own,
          notes.notTranslated(setting.line, text, "no portbounce equivalent"),
        );
    }
  }
  if (outputs.length > 0) result.server.push(...outputNotes, `log = ${tomlList(outputs)}`);
  else result.comments.push(...outputNotes);
  const [facility, ...others] = [...facilities];
  if (facility) result.server.push(`syslog_facility = ${toml(facility[0])}`);
  for (const [name, line] of others) {
    result.comments.push(
      notes.notTranslated(
        line,
        `syslog/${name}`,
        `portbounce logs to one syslog facility; keeping ${facility[0]}`,
      ),
    );
  }
  return result;
}
