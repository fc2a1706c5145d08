/**
 * Log outputs through LogTape: stderr, stdout and files, in text or JSON.
 *
 * LogTape is configured once with a single routing sink; the outputs behind
 * it can be swapped (SIGHUP reopens log files for logrotate) without tearing
 * down the configuration, so no record is dropped while files reopen and the
 * stderr/stdout streams keep their one writer.
 *
 * @module
 */
import {
  configure,
  dispose,
  getLogger,
  getStreamSink,
  type Logger,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
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

type Formatter = (record: LogRecord) => string;

/** Stream sinks live as long as the process: a stream takes one writer. */
const streamSinks = new Map<"stderr" | "stdout", Sink & AsyncDisposable>();
/** The format in force; stream sinks format through it, so it can change. */
let currentFormatter: Formatter = textFormatter;
let current: Sink[] = [];
let openFiles: (Sink & Disposable)[] = [];
let configured = false;

function streamSink(kind: "stderr" | "stdout"): Sink {
  let sink = streamSinks.get(kind);
  if (!sink) {
    const stream = kind === "stderr" ? Deno.stderr.writable : Deno.stdout.writable;
    sink = getStreamSink(stream, {
      formatter: (record) => currentFormatter(record),
      closeStream: false,
    });
    streamSinks.set(kind, sink);
  }
  return sink;
}

/**
 * Opens every output and routes records to them. Throws, naming the file, if
 * a log file cannot be opened (and then keeps the previous outputs). Calling it
 * again reopens every file.
 */
export async function configureLogging(settings: LogSettings): Promise<void> {
  const formatter = settings.format === "json" ? jsonFormatter : textFormatter;
  const files: (Sink & Disposable)[] = [];
  const sinks: Sink[] = [];
  for (const output of settings.outputs) {
    if (output.kind !== "file") {
      sinks.push(streamSink(output.kind));
      continue;
    }
    try {
      // Loaded only when a file is logged to: it costs ~30 ms of start-up otherwise.
      const { getFileSink } = await import("@logtape/file");
      // Opened now, not on first record, so a bad path fails at once.
      const sink = getFileSink(output.path, { formatter, lazy: false, bufferSize: 0 });
      files.push(sink);
      sinks.push(sink);
    } catch (error) {
      for (const opened of files) opened[Symbol.dispose]();
      throw new Error(`cannot open log file "${output.path}": ${(error as Error).message}`);
    }
  }
  const previousFiles = openFiles;
  currentFormatter = formatter;
  current = sinks;
  openFiles = files;
  for (const old of previousFiles) old[Symbol.dispose]();
  await configure({
    reset: true,
    sinks: { outputs: (record: LogRecord) => current.forEach((sink) => sink(record)) },
    loggers: [
      { category: [...CATEGORY], sinks: ["outputs"], lowestLevel: settings.level },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
    ],
  });
  configured = true;
}

/** Flushes and closes every output. */
export async function closeLogging(): Promise<void> {
  if (configured) await dispose();
  for (const file of openFiles) file[Symbol.dispose]();
  for (const sink of streamSinks.values()) await sink[Symbol.asyncDispose]();
  openFiles = [];
  streamSinks.clear();
  configured = false;
}

/** The portbounce logger. */
export function logger(): Logger {
  return getLogger([...CATEGORY]);
}
