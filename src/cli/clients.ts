/**
 * `portbounce clients [RULE]`: who used each rule of a running instance,
 * from its client ledger (`/clients.json`): the question that decides when a
 * rule of the move can go.
 *
 * @module
 */
import { parseLookback } from "../config/duration.ts";
import { ago } from "../status/page.ts";
import { formatSize } from "../config/size.ts";
import type { ClientRow, ClientsReport } from "../status/clients.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { parseCommandArgs, UsageError } from "./args.ts";
import { renderTable } from "./check.ts";
import { ENDPOINT_OPTIONS, endpointUrl, fetchJson } from "./endpoint_client.ts";

/** Help for `portbounce clients`. */
export const CLIENTS_HELP =
  `Usage: portbounce clients [RULE] [--since DURATION] [--url URL | -c FILE] [--json]

Lists the clients of each rule of a running portbounce (or of RULE), most
recently seen first, from its client ledger (/clients.json): address,
reverse-DNS name, the rule, the listen address it reached (VIA: the new
address or the old), when it was first and last seen, its sessions (and
refusals) and bytes each way. A client in session now is seen "now".

Options:
      --since DURATION  only clients seen within DURATION (e.g. 24h, 7d is 168h)
      --url URL         the endpoint, e.g. 127.0.0.1:9180 (default http://127.0.0.1:9180)
  -c, --config FILE     ask the endpoint FILE's [server] status names
      --json            print /clients.json as it is
  -h, --help            this help

Exit codes: 0 answered, 1 no answer (or no such rule), 2 usage.`;

/** Clients of every rule as one table, most recently seen first. */
export function renderClients(report: ClientsReport, now: number): string {
  const rows = report.rules.flatMap((rule) => rule.clients.map((client) => ({ rule, client })))
    .sort((a, b) => Date.parse(b.client.last_seen) - Date.parse(a.client.last_seen));
  if (report.ledger === "off") return "this instance keeps no clients ([server] clients = 0)";
  const evicted = report.rules.filter((r) => r.evicted > 0)
    .map((r) => `${r.name}: ${r.evicted} clients forgotten ([server] clients)`);
  if (rows.length === 0) {
    const what = report.rule === null ? "any rule" : `rule ${report.rule}`;
    return [`no client of ${what}${report.since ? ` since ${report.since}` : ""}`, ...evicted]
      .join("\n");
  }
  return [
    renderTable(
      ["CLIENT", "NAME", "RULE", "VIA", "FIRST SEEN", "LAST SEEN", "SESSIONS", "UP/DOWN"],
      rows.map(({ rule, client }) => [
        printable(client.address),
        printable(client.name ?? "-"),
        rule.name,
        printable(client.via),
        client.first_seen.replace("T", " ").replace(/\.\d+Z$/, "Z"),
        lastSeen(client, now),
        sessions(client),
        `${formatSize(client.bytes_up)}/${formatSize(client.bytes_down)}`,
      ]),
    ),
    ...evicted,
  ].join("\n");
}

/** Text from the endpoint as a terminal may show it: control characters as `?`. */
function printable(text: string): string {
  // deno-lint-ignore no-control-regex -- control characters are what is replaced
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, "?");
}

function lastSeen(client: ClientRow, now: number): string {
  if (client.active > 0) return "now";
  return now - Date.parse(client.last_seen) < 1_000 ? "just now" : ago(client.last_seen, now);
}

function sessions(client: ClientRow): string {
  const live = client.active > 0 ? ` (${client.active} live)` : "";
  const refused = client.refused > 0 ? `, ${client.refused} refused` : "";
  return `${client.sessions}${live}${refused}`;
}

/** Runs `portbounce clients ARGS`; resolves to the exit code. */
export async function clientsCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs("clients", args, {
    ...ENDPOINT_OPTIONS,
    since: { type: "string" },
  }, true);
  if (values.help) {
    console.log(CLIENTS_HELP);
    return ExitCode.ok;
  }
  if (positionals.length > 1) {
    throw new UsageError(`clients: one rule at most, got ${positionals.length}`);
  }
  const query = new URLSearchParams();
  if (positionals.length === 1) query.set("rule", positionals[0]);
  if (values.since !== undefined) {
    const ms = parseLookback(values.since);
    if (typeof ms !== "number") throw new UsageError(`clients: --since: ${ms.error}`);
    // Further back than the clock goes asks for every client kept.
    if (ms < Date.now()) query.set("since", `${ms / 1_000}`);
  }
  const path = `/clients.json${query.size > 0 ? `?${query}` : ""}`;
  const answer = await fetchJson<ClientsReport>(await endpointUrl("clients", values), path);
  if ("error" in answer) {
    console.error(`portbounce clients: ${answer.error}`);
    return ExitCode.runtime;
  }
  console.log(values.json ? JSON.stringify(answer, null, 2) : renderClients(answer, Date.now()));
  return ExitCode.ok;
}
