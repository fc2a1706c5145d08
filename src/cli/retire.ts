/**
 * `portbounce retire RULE`: the last step of moving one service. Asks the
 * running instance who used the rule lately (its client ledger); refuses
 * while anyone did; otherwise removes the rule's `[[rule]]` table from the
 * file by editing its text (every other byte stays), keeps a backup, checks
 * the result as `check` does, replaces the file atomically and has the
 * running instance reload it, then prints what the reload did.
 *
 * The instance is asked to reload over its hand-over socket (beside the pid
 * file), not with SIGHUP: signalling needs Deno's `--allow-run`, which the
 * program does not have. Two `retire`s of one file take turns (a lock file
 * beside it): no edit is lost.
 *
 * @module
 */
import { removeRule } from "../config/edit.ts";
import { formatDuration, parseDuration } from "../config/duration.ts";
import { formatAddress } from "../config/endpoint.ts";
import { formatProblem } from "../config/load.ts";
import { formatSize } from "../config/size.ts";
import { didYouMean } from "../config/suggest.ts";
import { ExitCode } from "../server/exit_codes.ts";
import { requestReload, runningInstance } from "../server/handover.ts";
import { loadRuleFile, loadRuleText } from "../server/rule_file.ts";
import type { ClientRow, ClientsReport } from "../status/clients.ts";
import { parseCommandArgs, UsageError } from "./args.ts";
import { renderTable } from "./check.ts";
import { fetchJson } from "./endpoint_client.ts";

/** Help for `portbounce retire`. */
export const RETIRE_HELP =
  `Usage: portbounce retire RULE [-c FILE] [--quiet-for DURATION] [--force] [--dry-run]

Removes RULE from FILE (default /etc/portbounce.toml) once nobody uses it, and
has the running portbounce reload. It asks the running instance (through its
status endpoint) who used the rule within DURATION (default 1h), or is in
session now; if anyone did, it refuses and lists them. Otherwise it removes
the rule's [[rule]] table (with the comment lines right above it) and leaves
every other byte of the file as it was, keeps a backup beside it
(FILE.TIMESTAMP.bak), checks the result as check does (nothing is written if
it has problems), replaces the file atomically, asks the instance to reload
(over its hand-over socket beside [server] pid_file), and prints what the
reload did. With no instance running it edits the file only, and says so.

Options:
  -c, --config FILE        the rule file (default /etc/portbounce.toml)
      --quiet-for DURATION how long nobody may have used the rule (default 1h)
      --force              remove it even if someone used it
      --dry-run            print the change and the verdict; change nothing
  -h, --help               this help

Exit codes: 0 removed (and reloaded, when an instance runs; --dry-run: it
would be); 1 refused (someone used it), or the instance could not be asked or
reloaded; 2 usage, no such rule, or a file whose result would have problems.`;

/** Runs `portbounce retire ARGS`; resolves to the exit code. */
export async function retireCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs("retire", args, {
    config: { type: "string", short: "c", default: "/etc/portbounce.toml" },
    "quiet-for": { type: "string", default: "1h" },
    force: { type: "boolean" },
    "dry-run": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (values.help) {
    console.log(RETIRE_HELP);
    return ExitCode.ok;
  }
  if (positionals.length !== 1) {
    throw new UsageError(`retire: name one rule (got ${positionals.length})`);
  }
  const quiet = parseDuration(
    /^\d+$/.test(values["quiet-for"]!) ? Number(values["quiet-for"]) : values["quiet-for"],
  );
  if (typeof quiet !== "number") throw new UsageError(`retire: --quiet-for: ${quiet.error}`);
  const file = values.config!;
  await using _lock = await lockFile(file);
  return await retire(positionals[0], file, {
    quietMs: quiet,
    force: values.force ?? false,
    dryRun: values["dry-run"] ?? false,
  });
}

interface RetireOptions {
  readonly quietMs: number;
  readonly force: boolean;
  readonly dryRun: boolean;
}

async function retire(name: string, file: string, options: RetireOptions): Promise<number> {
  const loaded = await loadRuleFile(file);
  if (!loaded.ok) {
    for (const problem of loaded.problems) console.error(formatProblem(problem));
    console.error(`retire: ${file} has problems; fix them first (nothing was changed)`);
    return ExitCode.usage;
  }
  const { config } = loaded;
  const rule = config.rules.find((r) => r.name === name);
  if (!rule) {
    console.error(
      `retire: ${file} has no rule named "${name}"${
        didYouMean(name, config.rules.map((r) => r.name))
      }`,
    );
    return ExitCode.usage;
  }

  // Who used it lately: the running instance knows (its client ledger).
  const users = await recentUsers(config, name, options.quietMs);
  if ("error" in users) {
    console.error(`retire: ${users.error}`);
    if (!options.force) return ExitCode.runtime;
  }
  const clients = "clients" in users ? users.clients : [];
  const verdict = clients.length === 0
    ? `nobody used rule ${name} within ${formatDuration(options.quietMs)}`
    : `${clients.length} client${clients.length === 1 ? "" : "s"} used rule ${name} within ${
      formatDuration(options.quietMs)
    }`;
  if (clients.length > 0) {
    console.log(`${verdict}:`);
    console.log(renderUsers(clients));
  }
  if (clients.length > 0 && !options.force) {
    console.error(
      `retire: refused: rule ${name} is still in use (--force removes it anyway; --quiet-for sets how long it must be quiet)`,
    );
    return ExitCode.runtime;
  }

  const text = loaded.inputs.text;
  const removal = removeRule(text, rule.index);
  if (removal === null) {
    console.error(`retire: cannot find the [[rule]] table of ${name} in ${file}; edit it by hand`);
    return ExitCode.usage;
  }
  // The result is checked as `check` checks a file, and must hold exactly the other rules.
  const after = await loadRuleText(removal.text, file);
  if (!after.ok) {
    for (const problem of after.problems) console.error(formatProblem(problem));
    console.error(`retire: without rule ${name}, ${file} would have problems; nothing was written`);
    return ExitCode.usage;
  }
  if (after.config.rules.length === 0) {
    // A running instance refuses a file without rules (one caught while being written).
    console.error(
      `retire: ${name} is the last rule of ${file}; without it portbounce has nothing to do: stop it instead (nothing was written)`,
    );
    return ExitCode.usage;
  }
  const others = config.rules.filter((r) => r !== rule).map((r) => r.name);
  if (JSON.stringify(after.config.rules.map((r) => r.name)) !== JSON.stringify(others)) {
    console.error(`retire: removing ${name} would change other rules of ${file}; edit it by hand`);
    return ExitCode.usage;
  }
  if (options.dryRun) {
    console.log(diff(file, removal));
    console.log(`${verdict}${clients.length > 0 ? " (--force)" : ""}: would remove rule ${name}`);
    return ExitCode.ok;
  }

  const backup = await backUp(file);
  await replaceAtomically(file, removal.text);
  console.log(
    `${verdict}${
      clients.length > 0 ? " (--force)" : ""
    }: removed rule ${name} (lines ${removal.firstLine}-${removal.lastLine}); backup ${backup}`,
  );
  return await reloadInstance(config, file, "status" in users ? users.status : null);
}

/** The clients of `name` within `quietMs`, from the running instance; or why it cannot say. */
async function recentUsers(
  config: import("../config/types.ts").Config,
  name: string,
  quietMs: number,
): Promise<
  | { clients: readonly ClientRow[]; status: "answered" | "none" }
  | { error: string; status: "unknown" }
> {
  const status = config.server.status;
  if (!status) {
    // Nothing to ask: fine when nothing runs; an instance that runs cannot say who uses the rule.
    const running = config.server.pidFile ? await runningInstance(config.server.pidFile) : null;
    return running
      ? {
        error:
          `process ${running.pid} runs these rules but has no status endpoint ([server] status): who uses rule ${name} is unknown (--force removes it anyway)`,
        status: "unknown",
      }
      : { clients: [], status: "none" };
  }
  const base = new URL(`http://${formatAddress(status.hostname, status.port)}`);
  const query = new URLSearchParams({ rule: name, since: `${quietMs / 1_000}` });
  const answer = await fetchJson<ClientsReport>(base, `/clients.json?${query}`);
  if ("error" in answer) {
    if (/HTTP 400: .*no rule named/.test(answer.error)) {
      // The instance does not run this rule (not reloaded since it was added): nobody uses it.
      console.log(`the running instance has no rule ${name} (not reloaded since it was added)`);
      return { clients: [], status: "answered" };
    }
    if (/HTTP \d+/.test(answer.error)) return { error: answer.error, status: "unknown" };
    console.log(`no instance answers at ${base.host}: editing the file only`);
    return { clients: [], status: "none" };
  }
  if (answer.ledger === "off") {
    return {
      error:
        `the running instance keeps no clients ([server] clients = 0): who uses rule ${name} is unknown (--force removes it anyway)`,
      status: "unknown",
    };
  }
  return { clients: answer.rules.flatMap((r) => r.clients), status: "answered" };
}

function renderUsers(clients: readonly ClientRow[]): string {
  return renderTable(
    ["CLIENT", "NAME", "VIA", "LAST SEEN", "SESSIONS", "UP/DOWN"],
    clients.map((c) => [
      c.address,
      c.name ?? "-",
      c.via,
      c.active > 0 ? "now (in session)" : c.last_seen.replace("T", " ").replace(/\.\d+Z$/, "Z"),
      String(c.sessions + c.refused),
      `${formatSize(c.bytes_up)}/${formatSize(c.bytes_down)}`,
    ]),
  );
}

/** The change as a unified diff of the lines removed. */
function diff(file: string, removal: { firstLine: number; lastLine: number; removed: string }) {
  const lines = removal.removed.split(/\r?\n/);
  return [
    `--- ${file}`,
    `+++ ${file} (retired)`,
    `@@ -${removal.firstLine},${lines.length} +${removal.firstLine - 1},0 @@`,
    ...lines.map((line) => `-${line}`),
  ].join("\n");
}

/** Copies `file` to `FILE.20261206T094512Z.bak` (or `-2`, ... if taken); resolves to its path. */
async function backUp(file: string): Promise<string> {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  for (let n = 1;; n++) {
    const path = `${file}.${stamp}${n === 1 ? "" : `-${n}`}.bak`;
    try {
      // createNew: never overwrite an earlier backup.
      using target = await Deno.open(path, { write: true, createNew: true });
      const source = await Deno.readFile(file);
      await target.write(source).then(async (written) => {
        for (let at = written; at < source.length;) at += await target.write(source.subarray(at));
      });
      await target.sync();
      return path;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
  }
}

/** Writes `text` to a temporary file beside `file`, syncs it, and renames it over `file`. */
async function replaceAtomically(file: string, text: string): Promise<void> {
  const mode = (await Deno.stat(file)).mode;
  const temporary = `${file}.retire-${Deno.pid}.tmp`;
  try {
    using handle = await Deno.open(temporary, { write: true, createNew: true, mode: 0o600 });
    const bytes = new TextEncoder().encode(text);
    for (let at = 0; at < bytes.length;) at += await handle.write(bytes.subarray(at));
    await handle.sync();
    if (mode !== null) await Deno.chmod(temporary, mode & 0o7777);
    await Deno.rename(temporary, file);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

/** Asks the running instance to reload and prints what came of it. */
async function reloadInstance(
  config: import("../config/types.ts").Config,
  file: string,
  asked: "answered" | "none" | "unknown" | null,
): Promise<number> {
  const pidFile = config.server.pidFile;
  const reloaded = pidFile ? await requestReload(pidFile) : null;
  if (reloaded === null) {
    if (asked === "answered" || asked === "unknown") {
      console.error(
        `retire: the instance runs, but retire cannot ask it to reload ${
          pidFile ? `(nothing answers beside ${pidFile})` : "(no [server] pid_file)"
        }: reload it yourself (systemctl reload portbounce, or SIGHUP); until then it keeps the rule`,
      );
      return ExitCode.runtime;
    }
    console.log(`no instance runs: ${file} is edited; it takes effect at the next start`);
    return ExitCode.ok;
  }
  if ("error" in reloaded) {
    console.error(`retire: ${reloaded.error}: reload it yourself`);
    return ExitCode.runtime;
  }
  const { report, pid } = reloaded;
  if (report.result === "refused") {
    console.error(`retire: process ${pid} refused the reload: ${report.summary}`);
    for (const problem of report.problems) console.error(`  ${problem}`);
    return ExitCode.runtime;
  }
  console.log(`process ${pid} reloaded (${report.result}): ${report.summary}`);
  return report.result === "applied" ? ExitCode.ok : ExitCode.runtime;
}

/**
 * Takes the lock of `file` (`FILE.lock` beside it, kept): a second `retire`
 * of the same file waits for the first, then reads the file as it left it.
 */
async function lockFile(file: string): Promise<AsyncDisposable> {
  const path = `${file}.lock`;
  const handle = await Deno.open(path, { write: true, create: true, mode: 0o600 });
  const slow = setTimeout(
    () => console.error(`retire: another retire is editing ${file}; waiting for it`),
    500,
  );
  try {
    await handle.lock(true);
  } finally {
    clearTimeout(slow);
  }
  return {
    async [Symbol.asyncDispose]() {
      await handle.unlock().catch(() => {});
      handle.close();
    },
  };
}
