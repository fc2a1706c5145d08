/**
 * Log lines to a local syslog daemon: one RFC 3164 datagram per event on
 * its unix datagram socket (`/dev/log`), tagged `portbounce[PID]`, severity
 * from the event's level. There is no connection to lose: while the daemon
 * is down (or restarting), sends fail and are counted like any lost line,
 * and the next one after it is back gets through.
 *
 * @module
 */
import type { LogLevel, LogRecord } from "@logtape/logtape";
import { SYSLOG_FACILITIES, type SyslogFacility } from "../config/types.ts";
import type { ByteSink } from "./writer.ts";

const SEVERITY: Record<LogLevel, number> = {
  trace: 7,
  debug: 7,
  info: 6,
  warning: 4,
  error: 3,
  fatal: 2,
};
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/** Longer messages are cut: many syslog daemons take at most 8 KiB (RFC 3164 says 1 KiB). */
const MAX_MESSAGE = 8_000;

/** `<PRI>Mmm dd hh:mm:ss portbounce[PID]: body` for a record whose body is `body`. */
export function syslogLine(
  record: LogRecord,
  body: string,
  facility: SyslogFacility,
  pid = Deno.pid,
): string {
  const priority = SYSLOG_FACILITIES.indexOf(facility) * 8 + SEVERITY[record.level];
  const at = new Date(record.timestamp);
  const two = (n: number) => String(n).padStart(2, "0");
  const stamp = `${MONTHS[at.getMonth()]} ${String(at.getDate()).padStart(2, " ")} ${
    two(at.getHours())
  }:${two(at.getMinutes())}:${two(at.getSeconds())}`;
  const text = body.endsWith("\n") ? body.slice(0, -1) : body;
  return `<${priority}>${stamp} portbounce[${pid}]: ${
    text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text
  }`;
}

/**
 * A sink sending each write as one datagram to the unix socket at `path`.
 * Sending needs a bound socket of our own (Deno will not leave it unbound):
 * it lives in a private temporary directory, removed on close.
 */
export function syslogSink(path: string): ByteSink {
  let own: { socket: Deno.DatagramConn; dir: string } | null = null;
  const address = { transport: "unixpacket" as const, path };
  return {
    async write(bytes) {
      if (!own) {
        const dir = Deno.makeTempDirSync({ prefix: "portbounce-syslog-" });
        try {
          own = {
            socket: Deno.listenDatagram({ transport: "unixpacket", path: `${dir}/sender.sock` }),
            dir,
          };
        } catch (error) {
          Deno.removeSync(dir, { recursive: true });
          throw error;
        }
      }
      await own.socket.send(bytes, address);
      return bytes.length;
    },
    close() {
      if (!own) return;
      own.socket.close();
      Deno.removeSync(own.dir, { recursive: true });
      own = null;
    },
  };
}
