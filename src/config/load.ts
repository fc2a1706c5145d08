/**
 * Rule file loading: TOML text in, a valid {@linkcode Config} or every problem
 * out. Pure: no I/O, so it is tested exhaustively and fast. Every problem names
 * where it is (file and line, the table or rule, the key) and what was expected.
 *
 * @module
 */
import { TomlDate, TomlError } from "smol-toml";
import { dirname, isAbsolute, join } from "node:path";
import { clip, clipMiddle, describe } from "./describe.ts";
import { parseDuration } from "./duration.ts";
import { parseRate, parseSize } from "./size.ts";
import {
  type ListenEndpoint,
  parseListen,
  parseTarget,
  type Protocol,
  rangeSize,
  type TargetEndpoint,
} from "./endpoint.ts";
import { locateKeys, type SectionLines } from "./locate.ts";
import { parseTomlSteps } from "./toml_steps.ts";
import { runSteps, type Steps } from "./work_steps.ts";
import { ANY_NETWORKS, isInterfaceName, type Network, parseIp, parseNetwork } from "./network.ts";
import type { ServiceTable } from "./services.ts";
import { didYouMean } from "./suggest.ts";
import {
  BALANCE_MODES,
  CLIENT_NAMES,
  type Config,
  DEFAULT_BUFFER_MEMORY,
  DEFAULT_SYSLOG_SOCKET,
  type HealthCheck,
  LOG_EVENTS,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogEvent,
  type LogOutput,
  MAX_LEDGER_CLIENTS,
  MAX_WORKERS,
  PROXY_PROTOCOLS,
  type Rule,
  ruleLabel,
  type RuleSettings,
  type ServerSettings,
  type SourceAddress,
  SYSLOG_FACILITIES,
  type Throttle,
  type WorkerCount,
} from "./types.ts";

/** One thing wrong with a rule file. */
export interface ConfigProblem {
  /** `file:line` or `file:line:column`, or just the file when no line is known. */
  readonly where: string;
  /** What is wrong, naming the table or rule and the key. */
  readonly message: string;
}

/**
 * The rules of a parse, for the next parse of the file to keep each rule
 * whose table (and name) is the same: a reload that changes one rule of
 * 10,000 reads one.
 */
export interface RuleReuse {
  /** What every rule inherits ([defaults], [server] source) and the file's path: all must hold. */
  readonly context: string;
  /** Each rule by its name and its table as parsed. */
  readonly rules: ReadonlyMap<string, Rule>;
}

/** The outcome of loading a rule file. */
export type LoadResult =
  | {
    readonly ok: true;
    readonly config: Config;
    readonly warnings: readonly ConfigProblem[];
    readonly reuse: RuleReuse;
  }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

/** Formats a problem as one line (plus any indented TOML excerpt). */
export function formatProblem(problem: ConfigProblem): string {
  return `${problem.where}: ${problem.message}`;
}

const TOP_KEYS = ["server", "defaults", "rule"] as const;
const RULE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const BUILT_IN_SETTINGS: RuleSettings & { action: "pass" | "block" } = {
  action: "pass",
  protocols: ["tcp"],
  from: ANY_NETWORKS,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 0,
  stallTimeoutMs: 300_000,
  udpIdleTimeoutMs: 60_000,
  log: new Set<LogEvent>(["connect", "disconnect", "block", "error"]),
  maxSessions: 0,
  maxSessionsPerClient: 0,
  throttle: null,
  balance: "failover",
  healthCheck: null,
  source: null,
  proxyProtocol: null,
  bandwidth: null,
  alarmQuietMs: null,
  alarmErrors: null,
};

const BUILT_IN_SERVER: ServerSettings = {
  log: [{ kind: "stderr" }],
  logFormat: "text",
  logLevel: "info",
  status: null,
  statusHosts: [],
  drainTimeoutMs: 30_000,
  reloadDrainTimeoutMs: 0,
  reloadEnforcesRules: true,
  bufferMemory: DEFAULT_BUFFER_MEMORY,
  pidFile: null,
  syslogFacility: "daemon",
  source: null,
  historyMs: 24 * 3_600_000,
  workers: 1,
  clients: 10_000,
  clientNames: "reverse-dns",
  state: null,
};

type Table = Record<string, unknown>;
type Settings = RuleSettings & { action: "pass" | "block" };

/** Collects problems with their location. */
class Problems {
  readonly list: ConfigProblem[] = [];
  constructor(
    readonly source: string,
    readonly lines: SectionLines,
    /** The file's lines, for what the parser's values no longer show (a date as written). */
    readonly text: readonly string[] = [],
  ) {}

  /** Records a problem in `section` (`server`, `defaults`, `rule#N`), at `key` if given. */
  add(
    section: string,
    label: string,
    key: string | undefined,
    message: string,
  ): void {
    const found = this.lines.get(section);
    const line = (key !== undefined ? found?.keys.get(key) : undefined) ??
      found?.header;
    const where = line === undefined ? this.source : `${this.source}:${line}`;
    // A hostile file (a 1 MB value) must not make a 1 MB message.
    const text = clipMiddle(`${label}: ${key === undefined ? "" : `${key}: `}${message}`, 1_000);
    this.list.push({ where, message: text });
  }
}

/** A view of one table that reports problems against its own location. */
class Scope {
  constructor(
    readonly problems: Problems,
    readonly section: string,
    readonly label: string,
  ) {}

  fail(key: string | undefined, message: string): undefined {
    this.problems.add(this.section, this.label, key, message);
    return undefined;
  }

  /** Reports keys that are not in `known`, with a did-you-mean where one is close. */
  rejectUnknown(table: Table, known: readonly string[], hint = ""): void {
    for (const key of Object.keys(table)) {
      if (!known.includes(key)) {
        this.fail(key, `unknown key${didYouMean(key, known) || hint}`);
      }
    }
  }
}

/**
 * Parses and validates a rule file.
 *
 * @param text the file's contents
 * @param source the file's path, used in messages and to resolve relative log paths
 * @param services service names for ports
 */
export function parseConfig(
  text: string,
  source: string,
  services: ServiceTable,
): LoadResult {
  return runSteps(parseConfigSteps(text, source, services));
}

/** {@linkcode parseConfig} in steps, for a reload that must not hold relaying still. */
export function* parseConfigSteps(
  text: string,
  source: string,
  services: ServiceTable,
  previous?: RuleReuse,
): Steps<LoadResult> {
  let document: Table;
  try {
    document = yield* parseTomlSteps(text);
  } catch (error) {
    if (error instanceof TomlError) {
      const [first, ...excerpt] = error.message.split("\n");
      const message = clip(first.replace(/^Invalid TOML document: /, ""), 200);
      // The excerpt repeats the offending line: a 1 MB line must not make a 1 MB message.
      const frame = excerpt.filter((line) => line.trim() !== "").map((l) =>
        `    ${clipAround(l, error.column)}`
      );
      return {
        ok: false,
        problems: [{
          where: `${source}:${error.line}:${error.column}`,
          message: [`TOML syntax error: ${message}`, ...frame].join("\n"),
        }],
      };
    }
    throw error;
  }

  const problems = new Problems(source, yield* locateKeys(text), text.split("\n"));
  const warnings: ConfigProblem[] = [];
  const top = new Scope(problems, "", "rule file");
  top.rejectUnknown(
    document,
    TOP_KEYS,
    " (a rule file has [server], [defaults] and [[rule]])",
  );

  const server = readServer(
    document.server,
    new Scope(problems, "server", "[server]"),
    source,
  );
  const defaults = readDefaults(
    document.defaults,
    new Scope(problems, "defaults", "[defaults]"),
  );
  // [server] source is the default of [defaults] source, which is the default of a rule's.
  const inherited = { source: server?.source ?? null, ...defaults };
  // Everything a rule's reading depends on besides its table: the file's path, what it
  // inherits, and the service names its ports may use.
  const context = JSON.stringify([source, inherited, [...services]], canonical);
  const reuse = { context, rules: new Map<string, Rule>() };
  const rules = yield* readRules(document.rule, inherited, top, problems, services, {
    kept: previous?.context === context ? previous.rules : new Map(),
    made: reuse.rules,
  });

  if (problems.list.length > 0) return { ok: false, problems: problems.list };
  if (rules.length === 0) {
    warnings.push({
      where: source,
      message: "no [[rule]] tables: nothing will be listened on",
    });
  }
  return { ok: true, config: { source, server: server!, rules }, warnings, reuse };
}

/** At most about 120 characters of `line`, keeping the part around `column` (1-based). */
function clipAround(line: string, column: number): string {
  if (line.length <= 120) return line;
  const start = Math.max(0, Math.min(column - 60, line.length - 120));
  return `${start > 0 ? "…" : ""}${line.slice(start, start + 120)}${
    start + 120 < line.length ? "…" : ""
  }`;
}

function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

/**
 * How one key is read: its name in the file and its reader, which is given
 * the key to name in its problems (undefined: a problem was recorded).
 */
interface KeyReader<T> {
  readonly key: string;
  readonly read: (value: unknown, scope: Scope, key: string, source: string) => T | undefined;
}

/** One reader for every field of `T`: each key is said once, and none can be missed. */
type KeyTable<T> = { readonly [K in keyof T]-?: KeyReader<T[K]> };

/** `false` turns a setting off (null); anything else is read by `read`. */
function orOff<T>(read: KeyReader<T>["read"]): KeyReader<T | null>["read"] {
  return (value, scope, key, source) => value === false ? null : read(value, scope, key, source);
}

/** A duration of at least `minMs`. */
function duration(minMs: number): KeyReader<number>["read"] {
  return (value, scope, key) => readDuration(value, scope, key, minMs);
}

/** One of `choices`. */
function choice<T extends string>(choices: readonly T[]): KeyReader<T>["read"] {
  return (value, scope, key) => readChoice(value, choices, scope, key);
}

/** The keys of `[server]`, in the order they are read; unset ones take `BUILT_IN_SERVER`. */
const SERVER_READERS: KeyTable<ServerSettings> = {
  log: { key: "log", read: (value, scope, _key, source) => readLogOutputs(value, scope, source) },
  logFormat: { key: "log_format", read: choice(LOG_FORMATS) },
  logLevel: { key: "log_level", read: choice(LOG_LEVELS) },
  status: { key: "status", read: readStatusAddress },
  statusHosts: { key: "status_hosts", read: readStatusHosts },
  drainTimeoutMs: { key: "drain_timeout", read: duration(0) },
  reloadDrainTimeoutMs: { key: "reload_drain_timeout", read: duration(0) },
  reloadEnforcesRules: { key: "reload_enforces_rules", read: readBoolean },
  bufferMemory: { key: "buffer_memory", read: readBufferMemory },
  pidFile: { key: "pid_file", read: readPath },
  syslogFacility: { key: "syslog_facility", read: choice(SYSLOG_FACILITIES) },
  source: { key: "source", read: readSource },
  historyMs: { key: "history", read: readHistory },
  workers: {
    key: "workers",
    read: (value, scope, key) => readWorkerCount(value, (message) => scope.fail(key, message)),
  },
  clients: { key: "clients", read: readLedgerSize },
  clientNames: { key: "client_names", read: choice(CLIENT_NAMES) },
  state: { key: "state", read: readPath },
};

/** The per-rule settings, in `[defaults]` and each `[[rule]]`; unset ones come from there. */
const SETTING_READERS: KeyTable<Settings> = {
  action: { key: "action", read: choice(["pass", "block"] as const) },
  protocols: { key: "protocol", read: readProtocols },
  from: { key: "from", read: readNetworks },
  connectTimeoutMs: { key: "connect_timeout", read: duration(1) },
  idleTimeoutMs: { key: "idle_timeout", read: duration(0) },
  stallTimeoutMs: { key: "stall_timeout", read: duration(0) },
  udpIdleTimeoutMs: { key: "udp_idle_timeout", read: duration(1) },
  log: { key: "log", read: readLogEvents },
  maxSessions: { key: "max_sessions", read: readCount },
  maxSessionsPerClient: { key: "max_sessions_per_client", read: readCount },
  throttle: { key: "throttle", read: readThrottle },
  balance: { key: "balance", read: choice(BALANCE_MODES) },
  healthCheck: { key: "health_check", read: readHealthCheck },
  source: { key: "source", read: readSource },
  proxyProtocol: { key: "proxy_protocol", read: orOff(choice(PROXY_PROTOCOLS)) },
  alarmQuietMs: { key: "alarm_quiet", read: orOff(duration(1_000)) },
  alarmErrors: {
    key: "alarm_errors",
    read: orOff((value, scope, key) => readRateLimit(value, scope, key, "errors")),
  },
  bandwidth: { key: "bandwidth", read: readBandwidth },
};

/** Keys of `[server]`. */
export const SERVER_KEYS: readonly string[] = Object.values(SERVER_READERS).map((r) => r.key);
const SETTING_KEYS: readonly string[] = Object.values(SETTING_READERS).map((r) => r.key);
/** Keys of a `[[rule]]`. */
export const RULE_KEYS: readonly string[] = [
  "name",
  "listen",
  "bounce_to",
  "until",
  ...SETTING_KEYS,
];

/**
 * Reads every key of `table` that `readers` knows, into its field; a value
 * that fails is left out (its problem is recorded) and makes `failed` true.
 */
function readKeys<T>(
  table: Table,
  readers: KeyTable<T>,
  scope: Scope,
  source: string,
): { values: Partial<T>; failed: boolean } {
  const values: Partial<T> = {};
  let failed = false;
  for (const field of Object.keys(readers) as (keyof T)[]) {
    const { key, read } = readers[field];
    if (table[key] === undefined) continue;
    const value = read(table[key], scope, key, source);
    if (value === undefined) failed = true;
    else values[field] = value;
  }
  return { values, failed };
}

function readBandwidth(value: unknown, scope: Scope): number | undefined {
  const rate = parseRate(value);
  if (typeof rate === "number") return rate;
  return scope.fail("bandwidth", rate.error);
}

function readServer(
  value: unknown,
  scope: Scope,
  source: string,
): ServerSettings | undefined {
  if (value === undefined) return BUILT_IN_SERVER;
  if (!isTable(value)) {
    return scope.fail(undefined, `expected a table, got ${describe(value)}`);
  }
  scope.rejectUnknown(value, SERVER_KEYS);
  const { values, failed } = readKeys(value, SERVER_READERS, scope, source);
  return failed ? undefined : { ...BUILT_IN_SERVER, ...values };
}

/**
 * `workers = 2` or `"auto"` (also `--workers`): how many isolates accept TCP
 * connections. `fail` reports what is wrong and returns undefined.
 */
export function readWorkerCount(
  value: unknown,
  fail: (message: string) => undefined,
): WorkerCount | undefined {
  if (value === "auto") return "auto";
  const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= MAX_WORKERS) return n;
  return fail(
    `expected a number of workers from 1 to ${MAX_WORKERS} or "auto", got ${describe(value)}`,
  );
}

function readBoolean(value: unknown, scope: Scope, key: string): boolean | undefined {
  if (typeof value === "boolean") return value;
  return scope.fail(key, `expected true or false, got ${describe(value)}`);
}

/** A path; relative paths are relative to the rule file. */
function readPath(value: unknown, scope: Scope, key: string, source: string): string | undefined {
  if (typeof value !== "string" || value === "" || value.includes("\0")) {
    return scope.fail(key, `expected a file path, got ${describe(value)}`);
  }
  return isAbsolute(value) ? value : join(dirname(source), value);
}

/** `history`: a minute to 30 days. */
function readHistory(value: unknown, scope: Scope): number | undefined {
  const ms = readDuration(value, scope, "history", 60_000);
  if (ms === undefined) return undefined;
  if (ms < 60_000 || ms > 30 * 86_400_000) {
    return scope.fail("history", `"${value}": expected from 1m to 720h (30 days)`);
  }
  return ms;
}

/** At least 1 MiB: below that, hardly one streaming TCP direction gets a large buffer. */
const MIN_BUFFER_MEMORY = 1024 * 1024;

function readBufferMemory(value: unknown, scope: Scope): number | undefined {
  const bytes = parseSize(value);
  if (typeof bytes !== "number") return scope.fail("buffer_memory", bytes.error);
  if (bytes < MIN_BUFFER_MEMORY) {
    return scope.fail("buffer_memory", `"${value}" is too small (at least 1MiB)`);
  }
  return bytes;
}

function readLogOutputs(
  value: unknown,
  scope: Scope,
  source: string,
): LogOutput[] | undefined {
  const items = readStringList(value, scope, "log");
  if (items === undefined) return undefined;
  if (items.length === 0) {
    return scope.fail("log", "expected at least one output");
  }
  const outputs: LogOutput[] = [];
  for (const item of items) {
    if (item === "stderr" || item === "stdout") outputs.push({ kind: item });
    else if (item === "syslog") outputs.push({ kind: "syslog", path: DEFAULT_SYSLOG_SOCKET });
    else if (item.startsWith("syslog:")) {
      const path = item.slice("syslog:".length);
      if (!isAbsolute(path)) {
        scope.fail(
          "log",
          `"${item}": expected "syslog:/path/to/socket" (an absolute path to a unix datagram socket such as /dev/log)`,
        );
      } else outputs.push({ kind: "syslog", path });
    } else if (item.includes("/")) {
      outputs.push({
        kind: "file",
        path: isAbsolute(item) ? item : join(dirname(source), item),
      });
    } else {
      scope.fail(
        "log",
        `"${item}" is not an output${
          didYouMean(item, ["stderr", "stdout", "syslog"])
        } (outputs are "stderr", "stdout", "syslog", "syslog:/path/to/socket" or a file path containing "/", e.g. "./${item}")`,
      );
    }
  }
  return outputs.length === items.length ? outputs : undefined;
}

function readStatusAddress(
  value: unknown,
  scope: Scope,
): { hostname: string; port: number } | undefined {
  if (typeof value !== "string") {
    return scope.fail(
      "status",
      `expected "ADDRESS:PORT", got ${describe(value)}`,
    );
  }
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value);
  const ip = match ? parseIp(match[1] ?? match[2]) : undefined;
  const port = match ? Number(match[3]) : -1;
  if (!match || ip === undefined || "error" in ip || port > 65535) {
    return scope.fail(
      "status",
      `expected an IP address and port such as "127.0.0.1:9180" or "[::1]:9180", got "${value}"`,
    );
  }
  return { hostname: ip.toString(), port };
}

/** `status_hosts = ["bouncer.lab", "localhost:8080"]`: host names, with a port or not. */
function readStatusHosts(value: unknown, scope: Scope): readonly string[] | undefined {
  if (!Array.isArray(value)) {
    return scope.fail("status_hosts", `expected a list of host names, got ${describe(value)}`);
  }
  const hosts: string[] = [];
  for (const item of value) {
    const text = typeof item === "string" ? item.trim().toLowerCase() : "";
    const match = /^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)(:(\d{1,5}))?$/.exec(
      text,
    );
    if (!match || Number(match[4] ?? 0) > 65535) {
      return scope.fail(
        "status_hosts",
        `expected a host name such as "bouncer.lab" or "localhost:8080", got ${describe(item)}`,
      );
    }
    hosts.push(text);
  }
  return hosts;
}

function readDefaults(value: unknown, scope: Scope): Partial<Settings> {
  if (value === undefined) return {};
  if (!isTable(value)) {
    scope.fail(undefined, `expected a table, got ${describe(value)}`);
    return {};
  }
  for (const key of Object.keys(value)) {
    if (key === "name" || key === "listen" || key === "bounce_to") {
      scope.fail(key, "belongs in each [[rule]], not in [defaults]");
    } else if (!(SETTING_KEYS as readonly string[]).includes(key)) {
      scope.fail(key, `unknown key${didYouMean(key, SETTING_KEYS)}`);
    }
  }
  return readSettings(value, scope);
}

/** Reads whichever per-rule settings the table has (keys whose value failed are left out). */
function readSettings(table: Table, scope: Scope): Partial<Settings> {
  return readKeys(table, SETTING_READERS, scope, "").values;
}

function* readRules(
  value: unknown,
  defaults: Partial<Settings>,
  top: Scope,
  problems: Problems,
  services: ServiceTable,
  reuse: { kept: ReadonlyMap<string, Rule>; made: Map<string, Rule> },
): Steps<Rule[]> {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every(isTable)) {
    top.fail("rule", "expected [[rule]] tables (an array of tables)");
    return [];
  }
  const rules: Rule[] = [];
  const names = new Map<string, number>();
  const inherited = { ...BUILT_IN_SETTINGS, ...defaults };
  for (const [i, table] of value.entries()) {
    if (i % 32 === 31) yield;
    const index = i + 1;
    const givenName = typeof table.name === "string" ? table.name : undefined;
    const name = givenName ?? `rule-${index}`;
    const scope = new Scope(
      problems,
      `rule#${index}`,
      ruleLabel({ name, index }),
    );
    scope.rejectUnknown(table, RULE_KEYS);
    if (table.name !== undefined && givenName === undefined) {
      scope.fail("name", `expected a string, got ${describe(table.name)}`);
    } else if (givenName !== undefined && !RULE_NAME.test(givenName)) {
      scope.fail(
        "name",
        `"${
          clip(givenName)
        }" is not a usable name (letters, digits, ".", "_" and "-", at most 64, starting with a letter or digit)`,
      );
    }
    const earlier = names.get(name);
    if (earlier !== undefined) {
      scope.fail("name", `"${name}" is already the name of rule #${earlier}`);
    } else names.set(name, index);

    // A table read before (the same name, the same keys and values) gives the same rule.
    const key = reuseKey(name, table);
    const kept = key === undefined ? undefined : reuse.kept.get(key);
    const rule = kept
      ? placed(kept, index, linesOf(scope))
      : readRule(table, index, name, inherited, scope, services);
    if (rule) {
      rules.push(rule);
      if (key !== undefined) reuse.made.set(key, rule);
    }
  }
  return rules;
}

function readRule(
  table: Table,
  index: number,
  name: string,
  inherited: Settings,
  scope: Scope,
  services: ServiceTable,
): Rule | undefined {
  const before = scope.problems.list.length;
  const own = readSettings(table, scope);
  const settings: Settings = { ...inherited, ...own };
  const listen = readListen(table.listen, settings.protocols, scope, services);
  // With an unreadable action, what bounce_to should be is unknown: say nothing more.
  const actionKnown = table.action === undefined || own.action !== undefined;

  let bounceTo: TargetEndpoint[] | undefined;
  if (!actionKnown) {
    // Already reported.
  } else if (settings.action === "pass") {
    if (table.bounce_to === undefined) {
      scope.fail(
        undefined,
        'a pass rule needs bounce_to (or set action = "block")',
      );
    } else bounceTo = readTargets(table.bounce_to, settings.protocols, scope, services);
  } else if (table.bounce_to !== undefined) {
    scope.fail(
      "bounce_to",
      'a block rule bounces nowhere; remove bounce_to or set action = "pass"',
    );
  }
  if (listen && bounceTo) {
    for (const target of bounceTo) checkPortMapping(listen, target, scope);
  }
  if (settings.proxyProtocol !== null && settings.protocols.includes("udp")) {
    scope.fail(
      "proxy_protocol",
      'a PROXY protocol header goes at the start of a TCP stream; UDP has none (set protocol = "tcp", or leave proxy_protocol out)',
    );
  }
  if (bounceTo && settings.source?.kind === "ip") {
    const source = settings.source;
    for (const target of bounceTo) {
      if (target.host.kind === "ip" && target.host.family !== source.family) {
        scope.fail(
          "source",
          `"${source.text}" is IPv${source.family} but target "${target.text}" is IPv${target.host.family}: a connection cannot leave from one family toward the other`,
        );
      }
    }
  }

  const until = table.until === undefined ? null : readUntil(table.until, scope);

  if (scope.problems.list.length > before || !listen || until === undefined) return undefined;
  const base = { ...settings, index, name, listen, lines: linesOf(scope), until };
  return settings.action === "pass"
    ? { ...base, action: "pass", bounceTo: bounceTo! }
    : { ...base, action: "block" };
}

/** A table that holds a date is read every time (see `reuseKey`). */
const HOLDS_DATE = new Error("a date");

/**
 * The key a rule table is kept under for the next reload: its name and its
 * values, where what JSON would not tell apart (`inf` and `nan`) is marked
 * with a lone surrogate, which no TOML string can hold. Undefined for a table
 * that holds a date: the parser rolls `2030-02-30` over to March, and only
 * the text as written shows it is no day (`readUntil` reads that line).
 */
function reuseKey(name: string, table: Table): string | undefined {
  try {
    return `${name}\0${JSON.stringify(table, exactly)}`;
  } catch (error) {
    if (error === HOLDS_DATE) return undefined;
    throw error;
  }
}

function exactly(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key]; // `value` is after toJSON: a date is a string there
  if (raw instanceof TomlDate) throw HOLDS_DATE;
  if (typeof raw === "number" && !Number.isFinite(raw)) return `\ud800number ${raw}`;
  return value;
}

/** JSON for comparing settings: sets as sorted lists, maps as their entries. */
function canonical(_key: string, value: unknown): unknown {
  if (value instanceof Set) return [...value].map(String).sort();
  if (value instanceof Map) return [...value];
  return value;
}

/** Where a rule's header and keys are in the file. */
function linesOf(scope: Scope): Rule["lines"] {
  const found = scope.problems.lines.get(scope.section);
  return { header: found?.header ?? null, keys: found?.keys ?? new Map() };
}

/** `rule` at `index` and `lines`: itself if it is where it was, else a copy placed there. */
function placed(rule: Rule, index: number, lines: Rule["lines"]): Rule {
  const same = rule.index === index && rule.lines.header === lines.header &&
    rule.lines.keys.size === lines.keys.size &&
    [...lines.keys].every(([key, line]) => rule.lines.keys.get(key) === line);
  return same ? rule : { ...rule, index, lines };
}

/**
 * `until = 2026-12-31T18:00:00Z`: a TOML date-time with an offset, a local
 * date-time (this host's time zone) or a local date (the start of that day,
 * local time); the same written as a string is read alike.
 */
function readUntil(value: unknown, scope: Scope): number | undefined {
  const expected =
    "expected a date-time such as 2026-12-31T18:00:00Z, 2026-12-31T18:00:00 (local time) or 2026-12-31 (the start of that day)";
  let date: TomlDate;
  if (value instanceof TomlDate) date = value;
  else if (typeof value === "string") date = new TomlDate(value.trim());
  else return scope.fail("until", `${expected}, got ${describe(value)}`);
  if (date.isValid() && date.isTime()) {
    return scope.fail("until", `${expected}, got a time of day without a date`);
  }
  // The parser rolls a date that does not exist over (2026-02-30 becomes March 2): read it as written.
  const line = scope.problems.lines.get(scope.section)?.keys.get("until");
  const written = line === undefined ? String(value) : scope.problems.text[line - 1] ?? "";
  const asWritten = /until\s*=\s*["']?(\d{4}-\d{2}-\d{2})/.exec(written)?.[1] ?? String(value);
  if (!realDay(asWritten)) return scope.fail("until", `${asWritten} is no day of the calendar`);
  if (!date.isValid() || isNaN(date.getTime())) {
    return scope.fail("until", `${expected}, got ${describe(value)}`);
  }
  if (!date.isLocal()) return date.getTime();
  // Local: what the parser read as UTC is this host's wall-clock time.
  return new Date(
    date.getUTCFullYear(),
    date.getUTCMonth(),
    date.getUTCDate(),
    date.isDate() ? 0 : date.getUTCHours(),
    date.isDate() ? 0 : date.getUTCMinutes(),
    date.isDate() ? 0 : date.getUTCSeconds(),
    date.isDate() ? 0 : date.getUTCMilliseconds(),
  ).getTime();
}

/** Whether the date a text starts with exists (a string `2026-02-30` would roll over). */
function realDay(text: string): boolean {
  const day = /^\s*(\d{4})-(\d{2})-(\d{2})/.exec(text);
  if (!day) return true; // A TOML date value: the parser checked it.
  const [year, month, date] = [Number(day[1]), Number(day[2]), Number(day[3])];
  const check = new Date(Date.UTC(year, month - 1, date));
  return check.getUTCFullYear() === year && check.getUTCMonth() === month - 1 &&
    check.getUTCDate() === date;
}

function readListen(
  value: unknown,
  protocols: readonly Protocol[],
  scope: Scope,
  services: ServiceTable,
): ListenEndpoint[] | undefined {
  if (value === undefined) {
    return scope.fail(undefined, 'missing listen (e.g. listen = "0.0.0.0:80")');
  }
  const items = readStringList(value, scope, "listen");
  if (items === undefined) return undefined;
  if (items.length === 0) {
    return scope.fail("listen", "expected at least one address");
  }
  const endpoints: ListenEndpoint[] = [];
  for (const item of items) {
    const endpoint = parseListen(item, protocols, services);
    if ("error" in endpoint) scope.fail("listen", endpoint.error);
    else endpoints.push(endpoint);
  }
  return endpoints.length === items.length ? endpoints : undefined;
}

/** `bounce_to`: one target or a list of them, each at most once. */
function readTargets(
  value: unknown,
  protocols: readonly Protocol[],
  scope: Scope,
  services: ServiceTable,
): TargetEndpoint[] | undefined {
  if (typeof value !== "string" && !Array.isArray(value)) {
    return scope.fail(
      "bounce_to",
      `expected "ADDRESS[:PORT]" or a list of them, got ${describe(value)}`,
    );
  }
  const items = readStringList(value, scope, "bounce_to");
  if (items === undefined) return undefined;
  if (items.length === 0) return scope.fail("bounce_to", "expected at least one target");
  const targets: TargetEndpoint[] = [];
  const seen = new Set<string>();
  for (const item of items) {
    const target = parseTarget(item, protocols, services);
    if ("error" in target) {
      scope.fail("bounce_to", target.error);
      continue;
    }
    const key = `${target.host.kind === "ip" ? target.host.address : target.host.name} ${
      target.ports?.first ?? "-"
    } ${target.ports?.last ?? "-"}`;
    if (seen.has(key)) scope.fail("bounce_to", `"${item}" is listed twice`);
    seen.add(key);
    targets.push(target);
  }
  return targets.length === items.length ? targets : undefined;
}

/** `health_check = "5s"` or a table with interval, timeout, rise and fall. */
function readHealthCheck(value: unknown, scope: Scope): HealthCheck | null | undefined {
  if (value === false) return null;
  const defaults = { rise: 2, fall: 3 };
  if (typeof value === "string" || typeof value === "number") {
    const intervalMs = readDuration(value, scope, "health_check", 100);
    if (intervalMs === undefined) return undefined;
    return { intervalMs, timeoutMs: Math.min(2_000, intervalMs), ...defaults };
  }
  if (!isTable(value)) {
    return scope.fail(
      "health_check",
      `expected a duration such as "5s", or a table { interval = "5s", timeout = "2s", rise = 2, fall = 3 }, got ${
        describe(value)
      }`,
    );
  }
  for (const key of Object.keys(value)) {
    if (!["interval", "timeout", "rise", "fall"].includes(key)) {
      scope.fail("health_check", `unknown key "${key}" (keys: interval, timeout, rise, fall)`);
    }
  }
  const intervalMs = value.interval === undefined
    ? 5_000
    : readDuration(value.interval, scope, "health_check", 100);
  const timeoutMs = value.timeout === undefined
    ? Math.min(2_000, intervalMs ?? 5_000)
    : readDuration(value.timeout, scope, "health_check", 1);
  const count = (key: "rise" | "fall") => {
    const n = value[key];
    if (n === undefined) return defaults[key];
    if (typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= 100) return n;
    return scope.fail(
      "health_check",
      `${key}: expected a whole number from 1 to 100, got ${describe(n)}`,
    );
  };
  const rise = count("rise");
  const fall = count("fall");
  if (
    intervalMs === undefined || timeoutMs === undefined || rise === undefined || fall === undefined
  ) {
    return undefined;
  }
  if (timeoutMs > intervalMs) {
    return scope.fail("health_check", "timeout must not be longer than interval");
  }
  return { intervalMs, timeoutMs, rise, fall };
}

/** `source = "203.0.113.5"` or an interface name such as `"eth1"`. */
function readSource(value: unknown, scope: Scope): SourceAddress | undefined {
  if (typeof value !== "string" || value === "") {
    return scope.fail("source", `expected an address or an interface name, got ${describe(value)}`);
  }
  const text = value.startsWith("[") && value.endsWith("]") ? value.slice(1, -1) : value;
  if (/^[\d.]+$/.test(text) || text.includes(":")) {
    const ip = parseIp(text);
    if ("error" in ip) return scope.fail("source", ip.error);
    if (ip.toString() === "0.0.0.0" || ip.toString() === "::") {
      return scope.fail(
        "source",
        `"${value}" is not one address; leave source out for the default`,
      );
    }
    return {
      kind: "ip",
      address: ip.toString(),
      family: ip.kind() === "ipv4" ? 4 : 6,
      text: value,
    };
  }
  if (!isInterfaceName(text)) {
    return scope.fail("source", `"${clip(value)}" is neither an IP address nor an interface name`);
  }
  return { kind: "interface", name: text, text: value };
}

/** `bounce_to` ports: none (keep), one (all to it), or a range as long as each listen range. */
function checkPortMapping(
  listen: ListenEndpoint[],
  target: TargetEndpoint,
  scope: Scope,
): void {
  for (const endpoint of listen) {
    if (target.ports === null) {
      if (endpoint.ports.first === 0) {
        scope.fail(
          "bounce_to",
          `needs a port: "${endpoint.text}" listens on a port the system picks`,
        );
      }
    } else if (
      rangeSize(target.ports) > 1 &&
      rangeSize(target.ports) !== rangeSize(endpoint.ports)
    ) {
      scope.fail(
        "bounce_to",
        `port range of "${target.text}" has ${
          rangeSize(target.ports)
        } ports but "${endpoint.text}" has ${
          rangeSize(endpoint.ports)
        }; give a range of the same length, one port, or none (keep the listen port)`,
      );
    }
  }
}

function readStringList(
  value: unknown,
  scope: Scope,
  key: string,
): string[] | undefined {
  if (typeof value === "string") return [value];
  if (Array.isArray(value) && value.every((item) => typeof item === "string")) {
    return value;
  }
  return scope.fail(
    key,
    `expected a string or a list of strings, got ${describe(value)}`,
  );
}

function readChoice<T extends string>(
  value: unknown,
  choices: readonly T[],
  scope: Scope,
  key: string,
): T | undefined {
  if (
    typeof value === "string" && (choices as readonly string[]).includes(value)
  ) return value as T;
  const options = choices.map((c) => `"${c}"`).join(", ");
  const hint = typeof value === "string" ? didYouMean(value, choices) : "";
  return scope.fail(
    key,
    `expected one of ${options}, got ${describe(value)}${hint}`,
  );
}

function readProtocols(value: unknown, scope: Scope): Protocol[] | undefined {
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0) {
    return scope.fail("protocol", 'expected "tcp", "udp" or ["tcp", "udp"]');
  }
  const protocols: Protocol[] = [];
  for (const item of items) {
    const protocol = readChoice(
      item,
      ["tcp", "udp"] as const,
      scope,
      "protocol",
    );
    if (protocol === undefined) return undefined;
    if (protocols.includes(protocol)) {
      return scope.fail("protocol", `"${protocol}" is listed twice`);
    }
    protocols.push(protocol);
  }
  return protocols;
}

function readNetworks(value: unknown, scope: Scope): Network[] | undefined {
  const items = readStringList(value, scope, "from");
  if (items === undefined) return undefined;
  if (items.length === 0) {
    return scope.fail(
      "from",
      "an empty list matches no client; leave from out to match any client",
    );
  }
  const networks: Network[] = [];
  for (const item of items) {
    const network = parseNetwork(item);
    if ("error" in network) scope.fail("from", network.error);
    else networks.push(network);
  }
  return networks.length === items.length ? networks : undefined;
}

function readDuration(
  value: unknown,
  scope: Scope,
  key: string,
  minMs: number,
): number | undefined {
  const ms = parseDuration(value);
  if (typeof ms !== "number") return scope.fail(key, ms.error);
  if (ms < minMs) return scope.fail(key, `must be more than 0`);
  return ms;
}

function readCount(
  value: unknown,
  scope: Scope,
  key: string,
): number | undefined {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
    return value;
  }
  return scope.fail(
    key,
    `expected a whole number, 0 or more (0 = unlimited), got ${describe(value)}`,
  );
}

/** `clients = 10000`: entries per rule in the client ledger; 0 keeps no client address. */
function readLedgerSize(value: unknown, scope: Scope): number | undefined {
  if (
    typeof value === "number" && Number.isSafeInteger(value) && value >= 0 &&
    value <= MAX_LEDGER_CLIENTS
  ) {
    return value;
  }
  return scope.fail(
    "clients",
    `expected a number of clients per rule from 0 (keep none) to ${MAX_LEDGER_CLIENTS}, got ${
      describe(value)
    }`,
  );
}

function readLogEvents(
  value: unknown,
  scope: Scope,
): Set<LogEvent> | undefined {
  const items = readStringList(value, scope, "log");
  if (items === undefined) return undefined;
  const events = new Set<LogEvent>();
  for (const item of items) {
    const event = readChoice(item, LOG_EVENTS, scope, "log");
    if (event === undefined) return undefined;
    events.add(event);
  }
  return events;
}

function readThrottle(value: unknown, scope: Scope): Throttle | undefined {
  return readRateLimit(value, scope, "throttle", "new sessions");
}

/** `"COUNT/INTERVAL"` such as `"50/1s"` or `"10/m"`. */
function readRateLimit(
  value: unknown,
  scope: Scope,
  key: string,
  what: string,
): Throttle | undefined {
  const expected = `expected "COUNT/INTERVAL" such as "50/1s" (at most 50 ${what} a second)`;
  if (typeof value !== "string") {
    return scope.fail(key, `${expected}, got ${describe(value)}`);
  }
  const match = /^(\d+)\/(.+)$/.exec(value);
  if (!match) return scope.fail(key, `${expected}, got "${value}"`);
  const count = Number(match[1]);
  const interval = parseDuration(
    /^\d/.test(match[2]) ? match[2] : `1${match[2]}`,
  );
  if (typeof interval !== "number") {
    return scope.fail(key, `"${value}": ${interval.error}`);
  }
  if (count < 1 || interval < 1) {
    return scope.fail(key, `"${value}": count and interval must both be more than 0`);
  }
  return { count, intervalMs: interval, text: value };
}
