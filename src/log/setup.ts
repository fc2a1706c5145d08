/**
 * Log outputs through LogTape: stderr, stdout and files, in text or JSON.
 * Reconfiguring reopens files (what logrotate expects after SIGHUP).
 *
 * @module
 */
import {
  configure,
  dispose,
  getLogger,
  getStreamSink,
  type Logger,
  type Sink,
} from "@logtape/logtape";
import { getFileSink } from "@logtape/file";
import type { LogFormat, LogLevel, LogOutput } from "../config/types.ts";
import { jsonFormatter, textFormatter } from "./events.ts";

/** The logger category every portbounce record uses. */
export const CATEGORY = ["portbounce"] as const;

/** What logging needs from `[server]` (or from command-line overrides). */
export interface LogSettings {
  readonly outputs: readonly LogOutput[];
  readonly format: LogFormat;
  readonly level: LogLevel;
}

/**
 * Opens every output and routes records to them. Throws, naming the output,
 * if a file cannot be opened. Calling it again replaces (and so reopens) all.
 */
export async function configureLogging(settings: LogSettings): Promise<void> {
  const formatter = settings.format === "json" ? jsonFormatter : textFormatter;
  const sinks: Record<string, Sink> = {};
  settings.outputs.forEach((output, i) => {
    const name = `${output.kind}-${i}`;
    if (output.kind === "file") {
      try {
        // Opened now, not on first record, so a bad path fails at start.
        sinks[name] = getFileSink(output.path, {
          formatter,
          lazy: false,
          bufferSize: 0,
        });
      } catch (error) {
        throw new Error(
          `cannot open log file "${output.path}": ${(error as Error).message}`,
        );
      }
    } else {
      const stream = output.kind === "stderr" ? Deno.stderr.writable : Deno.stdout.writable;
      sinks[name] = getStreamSink(stream, { formatter, closeStream: false });
    }
  });
  await configure({
    reset: true,
    sinks,
    loggers: [
      {
        category: [...CATEGORY],
        sinks: Object.keys(sinks),
        lowestLevel: settings.level,
      },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
    ],
  });
}

/** Flushes and closes every output. */
export async function closeLogging(): Promise<void> {
  await dispose();
}

/** The portbounce logger. */
export function logger(): Logger {
  return getLogger([...CATEGORY]);
}
