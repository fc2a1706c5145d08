/**
 * `portbounce sessions`: every live session of a running instance, with its
 * age, idle time, bytes and the bouncer's own address toward the target (to
 * match the target's logs to clients). Barefoot prints this on a signal; so
 * does SIGUSR2 here.
 *
 * @module
 */
import { formatDuration } from "../config/duration.ts";
import type { SessionView } from "../status/report.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { parseCommandArgs } from "./args.ts";
import { renderTable } from "./check.ts";
import { ENDPOINT_OPTIONS, endpointUrl, fetchJson } from "./endpoint_client.ts";

/** Help for `portbounce sessions`. */
export const SESSIONS_HELP = `Usage: portbounce sessions [--url URL | -c FILE] [--json]

Lists every live session of a running portbounce (through its status
endpoint, /sessions.json): rule, protocol, client, listen address, target,
the bouncer's own address and port toward the target, age, idle time, bytes
each way, and state (active, or draining with the time left).

Options:
      --url URL      the endpoint, e.g. 127.0.0.1:9180 (default http://127.0.0.1:9180)
  -c, --config FILE  ask the endpoint FILE's [server] status names
      --json         print /sessions.json as it is
  -h, --help         this help

Exit codes: 0 answered, 1 no answer, 2 usage.`;

/** The sessions as a text table. */
export function renderSessions(sessions: readonly SessionView[]): string {
  if (sessions.length === 0) return "no live sessions";
  return renderTable(
    ["RULE", "PROTO", "CLIENT", "LISTEN", "TARGET", "VIA", "AGE", "IDLE", "UP", "DOWN", "STATE"],
    sessions.map((s) => [
      s.rule,
      s.protocol,
      s.client,
      s.listen,
      s.target,
      s.local ?? "(connecting)",
      formatDuration(s.age_s * 1000),
      formatDuration(s.idle_s * 1000),
      String(s.bytes_up),
      String(s.bytes_down),
      s.state === "draining" && s.drain_left_s !== null
        ? `draining, ${formatDuration(s.drain_left_s * 1000)} left`
        : s.state,
    ]),
  );
}

/** Runs `portbounce sessions ARGS`; resolves to the exit code. */
export async function sessionsCommand(args: string[]): Promise<number> {
  const { values } = parseCommandArgs("sessions", args, ENDPOINT_OPTIONS);
  if (values.help) {
    console.log(SESSIONS_HELP);
    return ExitCode.ok;
  }
  const answer = await fetchJson<{ sessions: SessionView[] }>(
    await endpointUrl("sessions", values),
    "/sessions.json",
  );
  if ("error" in answer) {
    console.error(`portbounce sessions: ${answer.error}`);
    return ExitCode.runtime;
  }
  console.log(values.json ? JSON.stringify(answer, null, 2) : renderSessions(answer.sessions));
  return ExitCode.ok;
}
