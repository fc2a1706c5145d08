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
import { formatDuration, parseLookback } from "../config/duration.ts";
import { formatProblem } from "../config/load.ts";
import { didYouMean } from "../config/suggest.ts";
import { ExitCode } from "../daemon/exit_codes.ts";
import { requestReload, runningInstance } from "../daemon/handover.ts";
import { fileStamp, writeAtomically } from "../daemon/ready_file.ts";
import { loadRuleFile, loadRuleText } from "../server/rule_file.ts";
import type { ClientsReport } from "../status/clients.ts";
import { parseCommandArgs, UsageError } from "./args.ts";
import { renderClients } from "./clients.ts";
import { fetchJson, parseEndpointUrl, statusUrl } from "./endpoint_client.ts";

/** Help for `portbounce retire`. */
export const RETIRE_HELP =
  `Usage: portbounce retire RULE [-c FILE] [--quiet-for DURATION] [--force] [--dry-run]
                         [--pid-file PATH] [--url URL]

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
      --pid-file PATH      the running instance's pid file, when FILE's
                           [server] pid_file does not name it (as the service
                           files pass --pid-file to run)
      --url URL            its status endpoint, when FILE's [server] status
                           does not name it
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
    "pid-file": { type: "string" },
    url: { type: "string" },
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
  const quiet = parseLookback(values["quiet-for"]!);
  if (typeof quiet !== "number") throw new UsageError(`retire: --quiet-for: ${quiet.error}`);
  // The file itself, not a link to it: the link stays, the file it names is edited.
  const file = await Deno.realPath(values.config!).catch(() => values.config!);
  await using _lock = await lockFile(file);
  return await retire(positionals[0], file, {
    quietMs: quiet,
    force: values.force ?? false,
    dryRun: values["dry-run"] ?? false,
    pidFile: values["pid-file"],
    url: values.url,
  });
}

interface RetireOptions {
  readonly quietMs: number;
  readonly force: boolean;
  readonly dryRun: boolean;
  /** `--pid-file`: the running instance's, when the rule file does not name it. */
  readonly pidFile?: string;
  /** `--url`: its status endpoint, when the rule file does not name it. */
  readonly url?: string;
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
  const instance = await findInstance(config, options);
  const users = await recentUsers(instance, name, options.quietMs);
  if ("error" in users) {
    console.error(`retire: ${users.error}`);
    if (!options.force) return ExitCode.runtime;
  }
  const answer = "answer" in users ? users.answer : null;
  const clients = answer?.rules.flatMap((r) => r.clients) ?? [];
  const within = options.quietMs >= Date.now()
    ? "ever (as far as the ledger goes)"
    : `within ${formatDuration(options.quietMs)}`;
  const verdict = "error" in users
    ? `who used rule ${name} is unknown`
    : clients.length === 0
    ? `nobody used rule ${name} ${within}`
    : `${clients.length} client${clients.length === 1 ? "" : "s"} used rule ${name} ${within}`;
  if (answer && clients.length > 0) {
    console.log(`${verdict}:`);
    console.log(renderClients(answer, Date.now()));
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
  // Every other rule exactly as it was (a sub-table left behind would move to another rule).
  const others = config.rules.filter((r) => r !== rule).map(ruleValue);
  if (JSON.stringify(after.config.rules.map(ruleValue)) !== JSON.stringify(others)) {
    console.error(`retire: removing ${name} would change other rules of ${file}; edit it by hand`);
    return ExitCode.usage;
  }
  if (options.dryRun) {
    console.log(diff(file, removal));
    console.log(`${verdict}${forced(users, clients)}: would remove rule ${name}`);
    return ExitCode.ok;
  }

  const backup = await backUp(file, text);
  await replaceAtomically(file, removal.text);
  console.log(
    `${verdict}${
      forced(users, clients)
    }: removed rule ${name} (lines ${removal.firstLine}-${removal.lastLine}); backup ${backup}`,
  );
  return await reloadInstance(instance, file);
}

/** A rule's settings, comparable as JSON: without where it stands in the file. */
function ruleValue(rule: import("../config/types.ts").Rule): string {
  const { lines: _lines, index: _index, ...value } = rule;
  return JSON.stringify(value, (_, v) => v instanceof Set ? [...v] : v);
}

function forced(users: object, clients: readonly unknown[]): string {
  return "error" in users || clients.length > 0 ? " (--force)" : "";
}

/** Where the running instance may be found: its pid file, its status endpoint, whether it runs. */
interface InstanceContact {
  readonly pidFile: string | null;
  readonly url: URL | null;
  /** The instance answering at the pid file's socket, or null. */
  readonly running: { readonly pid: number } | null;
}

async function findInstance(
  config: import("../config/types.ts").Config,
  options: RetireOptions,
): Promise<InstanceContact> {
  const pidFile = options.pidFile ?? config.server.pidFile;
  const running = pidFile ? await runningInstance(pidFile) : null;
  let url: URL | null = null;
  if (options.url !== undefined) {
    url = parseEndpointUrl("retire", options.url);
  } else if (config.server.status) {
    url = statusUrl(config.server.status);
  }
  return { pidFile, url, running };
}

/**
 * The clients of `name` within `quietMs`, from the running instance; or why
 * it cannot say. Whenever an instance runs, anything short of its answer is
 * "unknown": retire must not take silence for nobody.
 */
async function recentUsers(
  instance: InstanceContact,
  name: string,
  quietMs: number,
): Promise<{ answer: ClientsReport | null } | { error: string }> {
  const { url, running } = instance;
  const unknown = (why: string) => ({
    error: `${why}: who uses rule ${name} is unknown (--force removes it anyway)`,
  });
  if (url === null) {
    if (running) {
      return unknown(
        `process ${running.pid} runs these rules but has no status endpoint ([server] status, or --url)`,
      );
    }
    console.log(
      instance.pidFile === null
        ? "no status endpoint and no pid file: no running instance to ask; editing the file only"
        : `no instance answers beside ${instance.pidFile}, and none has a status endpoint: editing the file only`,
    );
    return { answer: null };
  }
  const query = new URLSearchParams({ rule: name });
  // Further back than the clock goes: every client the ledger holds.
  if (quietMs < Date.now()) query.set("since", `${quietMs / 1_000}`);
  const answer = await fetchJson<ClientsReport>(url, `/clients.json?${query}`);
  if ("error" in answer) {
    if (/HTTP 400: .*no rule named/.test(answer.error)) {
      return unknown(
        `the running instance has no rule ${name} (the file changed since its last reload?): reload it first`,
      );
    }
    if (running || /HTTP \d+/.test(answer.error)) return unknown(answer.error);
    console.log(`no instance answers at ${url.host}: editing the file only`);
    return { answer: null };
  }
  if (answer.ledger === "off") {
    return unknown("the running instance keeps no clients ([server] clients = 0)");
  }
  return { answer };
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

/**
 * Keeps `text` (the file as it was read and checked) as `FILE.20261206T094512Z.bak`
 * (or `-2`, ... if taken), with the file's mode; resolves to its path.
 */
async function backUp(file: string, text: string): Promise<string> {
  const stamp = fileStamp();
  const { mode } = await Deno.stat(file);
  for (let n = 1;; n++) {
    const path = `${file}.${stamp}${n === 1 ? "" : `-${n}`}.bak`;
    try {
      // createNew: never overwrite an earlier backup.
      await Deno.writeTextFile(path, text, { createNew: true, mode: 0o600 });
      if (mode !== null) await Deno.chmod(path, mode & 0o7777);
      return path;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
  }
}

/** Replaces `file` with `text` atomically, keeping its mode and owner. */
async function replaceAtomically(file: string, text: string): Promise<void> {
  const { mode, uid, gid } = await Deno.stat(file);
  await writeAtomically(file, text, {
    mode: mode ?? undefined,
    owner: uid !== null && gid !== null ? { uid, gid } : undefined,
  });
}

/** Asks the running instance to reload and prints what came of it. */
async function reloadInstance(instance: InstanceContact, file: string): Promise<number> {
  const reloaded = instance.pidFile ? await requestReload(instance.pidFile) : null;
  if (reloaded === null) {
    const answers = instance.url !== null &&
      !("error" in await fetchJson<Record<string, unknown>>(instance.url, "/status.json"));
    if (answers || instance.running) {
      console.error(
        `retire: the instance runs, but retire cannot ask it to reload ${
          instance.pidFile
            ? `(nothing answers beside ${instance.pidFile})`
            : "(no pid file: [server] pid_file, or --pid-file)"
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
