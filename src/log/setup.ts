/**
 * Log outputs: stderr, stdout, files and syslog, in text or JSON, behind
 * LogTape's logger. Every output is a {@linkcode LineWriter}: a slow or vanished reader
 * or a full disk costs lines (counted, see {@linkcode loggingHealth}), never
 * the process and never the relay's time.
 *
 * LogTape is configured with one routing sink; the outputs behind it can be
 * swapped (SIGHUP reopens log files for logrotate) without dropping records,
 * and stderr/stdout keep one writer each for the life of the process.
 *
 * @module
 */
import { configure, dispose, getLogger, type Logger, type LogRecord } from "@logtape/logtape";
import type { LogFormat, LogLevel, LogOutput, SyslogFacility } from "../config/types.ts";
import { jsonFormatter, textBody, textFormatter } from "./events.ts";
import { syslogLine, syslogSink } from "./syslog.ts";
import { LineWriter, type WriterHealth } from "./writer.ts";

/** The logger category every portbounce record uses. */
export const CATEGORY = ["portbounce"] as const;

/** What logging needs from `[server]` (or from command-line overrides). */
export interface LogSettings {
  readonly outputs: readonly LogOutput[];
  readonly format: LogFormat;
  readonly level: LogLevel;
  /** Facility of lines sent to syslog. */
  readonly syslogFacility?: SyslogFacility;
}

type Formatter = (record: LogRecord) => string;

/** An open output: where lines go, and how a record becomes its line. */
interface Output {
  readonly writer: LineWriter;
  readonly format: Formatter;
}

/** Stream writers live as long as the process. */
const streamWriters = new Map<"stderr" | "stdout", LineWriter>();
let outputs: Output[] = [];
/** Writers opened by the configuration in force (files, syslog), closed when it changes. */
let files: LineWriter[] = [];
let tap: ((record: LogRecord) => void) | undefined;
let configured = false;
/** Health of writers already closed (reopened files), so counts survive a reload. */
let retired = { failed: 0, dropped: 0, lastError: null as string | null };

function streamWriter(kind: "stderr" | "stdout"): LineWriter {
  let writer = streamWriters.get(kind);
  if (!writer) {
    const stream = kind === "stderr" ? Deno.stderr : Deno.stdout;
    writer = new LineWriter(kind, { write: (bytes) => stream.write(bytes) });
    streamWriters.set(kind, writer);
  }
  return writer;
}

async function openFile(path: string): Promise<LineWriter> {
  const file = await Deno.open(path, { append: true, create: true, write: true });
  return new LineWriter(path, file);
}

/**
 * Opens every output and routes records to them (and to `recordTap`, if
 * given). Throws, naming the file, if a log file cannot be opened (and then
 * keeps the previous outputs). Calling it again reopens every file.
 */
export async function configureLogging(
  settings: LogSettings,
  recordTap?: (record: LogRecord) => void,
): Promise<void> {
  const lineFormat = settings.format === "json" ? jsonFormatter : textFormatter;
  const facility = settings.syslogFacility ?? "daemon";
  // Syslog stamps its own time and severity: it gets the body alone (text) or the JSON object.
  const syslogFormat: Formatter = (record) =>
    syslogLine(
      record,
      settings.format === "json" ? jsonFormatter(record) : textBody(record),
      facility,
    );
  const opened: LineWriter[] = [];
  const next: Output[] = [];
  for (const output of settings.outputs) {
    if (output.kind === "stderr" || output.kind === "stdout") {
      next.push({ writer: streamWriter(output.kind), format: lineFormat });
    } else if (output.kind === "syslog") {
      const writer = new LineWriter(`syslog:${output.path}`, syslogSink(output.path), true);
      opened.push(writer);
      next.push({ writer, format: syslogFormat });
    } else {
      try {
        const writer = await openFile(output.path);
        opened.push(writer);
        next.push({ writer, format: lineFormat });
      } catch (error) {
        for (const writer of opened) await writer.close();
        throw new Error(
          `cannot open log file "${output.path}": ${
            (error as Error).message.replace(/ \(os error \d+\)$/, "")
          }`,
        );
      }
    }
  }
  const previous = files;
  outputs = next;
  files = opened;
  tap = recordTap;
  for (const old of previous) {
    await old.close();
    retire(old);
  }
  await configure({
    reset: true,
    sinks: { outputs: route },
    loggers: [
      { category: [...CATEGORY], sinks: ["outputs"], lowestLevel: settings.level },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
    ],
  });
  configured = true;
}

function route(record: LogRecord): void {
  tap?.(record);
  const lines = new Map<Formatter, string>();
  for (const { writer, format } of outputs) {
    let line = lines.get(format);
    if (line === undefined) lines.set(format, line = format(record));
    writer.push(line);
  }
}

function retire(writer: LineWriter): void {
  retired = {
    failed: retired.failed + writer.failed,
    dropped: retired.dropped + writer.dropped,
    lastError: writer.lastError ?? retired.lastError,
  };
}

/** Lines lost so far, over every output. */
export function loggingHealth(): WriterHealth {
  const live = new Set([...streamWriters.values(), ...files]);
  let { failed, dropped, lastError } = retired;
  for (const writer of live) {
    failed += writer.failed;
    dropped += writer.dropped;
    lastError = writer.lastError ?? lastError;
  }
  return { failed, dropped, lastError };
}

/** Flushes and closes every output. */
export async function closeLogging(): Promise<void> {
  if (configured) await dispose();
  for (const file of files) {
    await file.close();
    retire(file);
  }
  for (const writer of streamWriters.values()) await writer.flush();
  files = [];
  outputs = [];
  tap = undefined;
  configured = false;
}

/** The portbounce logger. */
export function logger(): Logger {
  return getLogger([...CATEGORY]);
}
