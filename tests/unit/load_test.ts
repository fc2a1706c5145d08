import { loadRules, passRule, problems } from "../fixtures/rules.ts";
import { assert, assertEquals, assertIncludes } from "../assert.ts";
import { parseConfig } from "../../src/config/load.ts";
import { builtInServices } from "../../src/config/services.ts";

const services = builtInServices();

function onlyProblem(text: string): string {
  const found = problems(text);
  assertEquals(found.length, 1, found.join("\n"));
  return found[0];
}

Deno.test("a minimal rule gets every documented default", () => {
  const config = loadRules('[[rule]]\nlisten = "127.0.0.1:8080"\nbounce_to = "127.0.0.1:80"\n');
  assertEquals(config.server.log, [{ kind: "stderr" }]);
  assertEquals(config.server.logFormat, "text");
  assertEquals(config.server.logLevel, "info");
  assertEquals(config.server.status, null);
  assertEquals(config.server.drainTimeoutMs, 30_000);
  const [rule] = config.rules;
  assertEquals(rule.name, "rule-1");
  assertEquals(rule.action, "pass");
  assertEquals(rule.protocols, ["tcp"]);
  assertEquals(rule.from.map((n) => n.text), ["0.0.0.0/0", "::/0"]);
  assertEquals(rule.connectTimeoutMs, 10_000);
  assertEquals(rule.idleTimeoutMs, 0);
  assertEquals(rule.udpIdleTimeoutMs, 60_000);
  assertEquals([...rule.log], ["connect", "disconnect", "block", "error"]);
  assertEquals([rule.maxSessions, rule.maxSessionsPerClient, rule.throttle], [0, 0, null]);
});

Deno.test("the full SPEC example loads, and [defaults] is overridden by rules", () => {
  const config = loadRules(`
[server]
log = ["stderr", "./portbounce.log"]
log_format = "json"
log_level = "debug"
status = "127.0.0.1:9180"
drain_timeout = "5s"

[defaults]
connect_timeout = "3s"
idle_timeout = "0s"
udp_idle_timeout = "60s"
log = ["connect", "disconnect", "block", "error"]
from = "10.0.0.0/8"

[[rule]]
name = "web"
action = "pass"
protocol = "tcp"
listen = "203.0.113.10:80"
from = ["0.0.0.0/0", "::/0"]
bounce_to = "192.0.2.10:80"
max_sessions = 100
max_sessions_per_client = 4
throttle = "50/1s"
connect_timeout = 1.5

[[rule]]
name = "dns"
protocol = ["tcp", "udp"]
listen = ["203.0.113.10:domain", "[2001:db8::10]:53"]
bounce_to = "192.0.2.53"

[[rule]]
action = "block"
listen = "203.0.113.10:22"
log = []
`);
  assertEquals(config.server.log, [{ kind: "stderr" }, { kind: "file", path: "portbounce.log" }]);
  assertEquals(config.server.status, { hostname: "127.0.0.1", port: 9180 });
  assertEquals(config.server.drainTimeoutMs, 5_000);
  const [web, dns, blocked] = config.rules;
  assertEquals(web.connectTimeoutMs, 1_500);
  assertEquals(web.throttle, { count: 50, intervalMs: 1_000, text: "50/1s" });
  assertEquals(web.from.length, 2);
  assertEquals(dns.connectTimeoutMs, 3_000);
  assertEquals(dns.from.map((n) => n.text), ["10.0.0.0/8"]);
  assertEquals(dns.listen.map((l) => l.ports.first), [53, 53]);
  assertEquals(blocked.name, "rule-3");
  assertEquals(blocked.action, "block");
  assertEquals(blocked.log.size, 0);
});

Deno.test("log file paths are relative to the rule file", () => {
  const result = parseConfig(
    '[server]\nlog = "logs/pb.log"\n',
    "/etc/portbounce/rules.toml",
    services,
  );
  assert(result.ok);
  assertEquals(result.config.server.log, [{ kind: "file", path: "/etc/portbounce/logs/pb.log" }]);
});

Deno.test("TOML syntax errors give line and column and an excerpt", () => {
  const problem = onlyProblem('[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = \n');
  assertIncludes(problem, "rules.toml:3:13: TOML syntax error");
  assertIncludes(problem, "bounce_to =");
  assertIncludes(
    onlyProblem('[server]\nlog_level = "info"\nlog_level = "debug"\n'),
    "rules.toml:3:1",
  );
  assertIncludes(onlyProblem('[[rule]]\nname = "unterminated\n'), "rules.toml:2:");
});

Deno.test("unknown keys are errors with did-you-mean, at their line", () => {
  const found = problems(`
[server]
log_levl = "info"

[defaults]
conect_timeout = "1s"

[[rule]]
listen = "127.0.0.1:80"
bounce_too = "127.0.0.1:81"

[extra]
x = 1
`);
  assertEquals(found.length, 5, found.join("\n"));
  assertIncludes(found[0], "rules.toml: rule file: extra: unknown key");
  assertIncludes(
    found[1],
    'rules.toml:3: [server]: log_levl: unknown key; did you mean "log_level"?',
  );
  assertIncludes(
    found[2],
    'rules.toml:6: [defaults]: conect_timeout: unknown key; did you mean "connect_timeout"?',
  );
  assertIncludes(
    found[3],
    'rules.toml:10: rule "rule-1" (rule #1): bounce_too: unknown key; did you mean "bounce_to"?',
  );
  assertIncludes(found[4], 'rule "rule-1" (rule #1): a pass rule needs bounce_to');
});

Deno.test("every problem is reported in one pass", () => {
  const found = problems(`
[server]
log_format = "xml"
drain_timeout = "soon"

[[rule]]
name = "a"
listen = "127.0.0.1:80"
bounce_to = "127.0.0.1:81"
from = "10.0.0.1/8"

[[rule]]
name = "b"
action = "pas"
listen = "127.0.0.1:99999"

[[rule]]
name = "a"
listen = "127.0.0.1:81"
bounce_to = "127.0.0.1"
protocol = "sctp"
`);
  const text = found.join("\n");
  for (
    const expected of [
      '[server]: log_format: expected one of "text", "json", got "xml"',
      '[server]: drain_timeout: expected a duration such as "250ms"',
      'rule "a" (rule #1): from: "10.0.0.1/8" has host bits set below /8; did you mean "10.0.0.0/8"?',
      'rule "b" (rule #2): action: expected one of "pass", "block", got "pas"; did you mean "pass"?',
      'rule "b" (rule #2): listen: "127.0.0.1:99999": port 99999 is out of range',
      'rule "a" (rule #3): name: "a" is already the name of rule #1',
      'rule "a" (rule #3): protocol: expected one of "tcp", "udp", got "sctp"',
    ]
  ) assertIncludes(text, expected);
  assertEquals(found.length, 7, text);
});

Deno.test("rule-level problems: each class with its message", () => {
  const cases: [string, string][] = [
    ['[[rule]]\nbounce_to = "127.0.0.1:80"\n', "missing listen"],
    [
      '[[rule]]\nlisten = []\nbounce_to = "127.0.0.1:80"\n',
      "listen: expected at least one address",
    ],
    [
      '[[rule]]\nlisten = 80\nbounce_to = "127.0.0.1:80"\n',
      "listen: expected a string or a list of strings, got number 80",
    ],
    ['[[rule]]\nlisten = "127.0.0.1:80"\n', "a pass rule needs bounce_to"],
    ['[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = 81\n', 'bounce_to: expected "ADDRESS[:PORT]"'],
    [
      '[[rule]]\naction = "block"\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:81"\n',
      "a block rule bounces nowhere",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:8000-8009"\nbounce_to = "127.0.0.1:9000-9004"\n',
      "has 5 ports but",
    ],
    ['[[rule]]\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1"\n', "needs a port"],
    ['[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "*:80"\n', 'not "*"'],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nfrom = []\n',
      "an empty list matches no client",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nprotocol = []\n',
      'expected "tcp", "udp"',
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nprotocol = ["tcp", "tcp"]\n',
      "listed twice",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nconnect_timeout = "0s"\n',
      "connect_timeout: must be more than 0",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nidle_timeout = -5\n',
      "idle_timeout: expected a duration",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nlog = ["conect"]\n',
      'log: expected one of "connect"',
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nmax_sessions = -1\n',
      "max_sessions: expected a whole number",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nmax_sessions_per_client = 1.5\n',
      "max_sessions_per_client: expected a whole number",
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nthrottle = "fast"\n',
      'throttle: expected "COUNT/INTERVAL"',
    ],
    [
      '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\nthrottle = "0/1s"\n',
      "must both be more than 0",
    ],
    [
      '[[rule]]\nname = "has space"\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\n',
      "is not a usable name",
    ],
    [
      '[[rule]]\nname = 7\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\n',
      "name: expected a string, got number 7",
    ],
    ["rule = 5\n", "expected [[rule]] tables"],
    ['[defaults]\nlisten = "127.0.0.1:80"\n', "[defaults]: listen: belongs in each [[rule]]"],
    ["server = 1\n", "[server]: expected a table"],
    ['[server]\nlog = "stdrr"\n', '"stdrr" is not an output; did you mean "stderr"?'],
    ["[server]\nlog = []\n", "expected at least one output"],
    ['[server]\nlog = "syslog:relative/log"\n', 'expected "syslog:/path/to/socket"'],
    ['[server]\nstatus = "localhost:9180"\n', "status: expected an IP address and port"],
    ["[server]\nstatus = 9180\n", 'status: expected "ADDRESS:PORT"'],
    [
      '[server]\nlog_level = "verbose"\n',
      'log_level: expected one of "debug", "info", "warning", "error"',
    ],
  ];
  for (const [text, expected] of cases) {
    const found = problems(text).join("\n");
    assertIncludes(found, expected);
  }
});

Deno.test("throttle accepts COUNT/DURATION and COUNT/UNIT", () => {
  const base = '[[rule]]\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:80"\n';
  assertEquals(loadRules(base + 'throttle = "10/s"\n').rules[0].throttle?.intervalMs, 1_000);
  assertEquals(loadRules(base + 'throttle = "100/5m"\n').rules[0].throttle?.intervalMs, 300_000);
});

Deno.test("bounce_to port mapping: kept, single, or a range of the same length", () => {
  const ok = loadRules(`
[[rule]]
listen = "127.0.0.1:8000-8002"
bounce_to = "127.0.0.1"
[[rule]]
listen = "127.0.0.1:9000-9002"
bounce_to = "127.0.0.1:7000"
[[rule]]
listen = "127.0.0.1:9100-9102"
bounce_to = "127.0.0.1:7100-7102"
`);
  assertEquals(ok.rules.length, 3);
});

Deno.test("an empty rule file is valid, with a warning", () => {
  const result = parseConfig("", "rules.toml", services);
  assert(result.ok);
  assertEquals(result.config.rules.length, 0);
  assertIncludes(result.warnings[0].message, "no [[rule]] tables");
});

Deno.test("several targets, balance, health checks, source, PROXY protocol and bandwidth", () => {
  const config = loadRules(`
[server]
source = "127.0.0.5"

[[rule]]
name = "web"
listen = "127.0.0.1:80"
bounce_to = ["127.0.0.1:8081", "127.0.0.1:8082"]
balance = "round-robin"
health_check = { interval = "2s", timeout = "500ms", rise = 1, fall = 2 }
proxy_protocol = "v2"
bandwidth = "10MiB/s"

[[rule]]
name = "dns"
protocol = "udp"
listen = "127.0.0.1:53"
bounce_to = "127.0.0.1:5353"
health_check = "5s"
source = "lo"
`);
  const [web, dns] = config.rules;
  assert(web.action === "pass" && dns.action === "pass");
  assertEquals(web.bounceTo.map((t) => t.text), ["127.0.0.1:8081", "127.0.0.1:8082"]);
  assertEquals(web.balance, "round-robin");
  assertEquals(web.healthCheck, { intervalMs: 2_000, timeoutMs: 500, rise: 1, fall: 2 });
  assertEquals(web.proxyProtocol, "v2");
  assertEquals(web.bandwidth, 10 * 1024 * 1024);
  assertEquals(web.source, { kind: "ip", address: "127.0.0.5", family: 4, text: "127.0.0.5" });
  assertEquals(dns.healthCheck, { intervalMs: 5_000, timeoutMs: 2_000, rise: 2, fall: 3 });
  assertEquals(dns.source, { kind: "interface", name: "lo", text: "lo" });
  assertEquals(dns.balance, "failover", "the default");
});

Deno.test("bad target lists, balance modes, rates and PROXY on UDP are located errors", () => {
  const rule = (extra: string, target = '"127.0.0.1:81"') =>
    `[[rule]]\nname = "r"\nlisten = "127.0.0.1:80"\nbounce_to = ${target}\n${extra}\n`;
  const cases: [string, string][] = [
    [rule("", "[]"), 'rules.toml:4: rule "r" (rule #1): bounce_to: expected at least one target'],
    [rule("", '["127.0.0.1:81", "127.0.0.1:81"]'), 'bounce_to: "127.0.0.1:81" is listed twice'],
    [
      rule('balance = "random"'),
      'rules.toml:5: rule "r" (rule #1): balance: expected one of "failover", "round-robin", "least-sessions", "source-hash", got "random"',
    ],
    [rule('bandwidth = "10"'), 'bandwidth: expected a rate such as "10MiB/s"'],
    [rule('bandwidth = "10MiB"'), 'bandwidth: expected a rate such as "10MiB/s"'],
    [rule('bandwidth = "0MiB/s"'), "must be more than 0"],
    [
      rule('protocol = "udp"\nproxy_protocol = "v1"'),
      "a PROXY protocol header goes at the start of a TCP stream",
    ],
    [rule('proxy_protocol = "v3"'), 'proxy_protocol: expected one of "v1", "v2"'],
    [rule('source = "[::1]"'), 'source: "[::1]" is IPv6 but target "127.0.0.1:81" is IPv4'],
    [rule('source = "0.0.0.0"'), "is not one address"],
    [
      rule('health_check = { interval = "1s", timeout = "2s" }'),
      "timeout must not be longer than interval",
    ],
    [rule("health_check = { rise = 0 }"), "rise: expected a whole number from 1 to 100"],
    [rule('health_check = { every = "1s" }'), 'unknown key "every"'],
  ];
  for (const [text, expected] of cases) {
    assertIncludes(problems(text).join("\n"), expected);
  }
});

Deno.test("status_hosts: names with or without a port, lowercase; anything else a located error", () => {
  const rule = `[[rule]]\nname = "r"\nlisten = "127.0.0.1:80"\nbounce_to = "127.0.0.1:81"\n`;
  const config = loadRules(
    `[server]\nstatus = "127.0.0.1:9180"\nstatus_hosts = ["Bouncer.Lab", "localhost:8080", "[::1]:9"]\n${rule}`,
  );
  assertEquals(config.server.statusHosts, ["bouncer.lab", "localhost:8080", "[::1]:9"]);
  for (
    const bad of ['"bouncer.lab"', '["a b"]', '["host:99999"]', '["-x"]', "[1]", '["x/y"]']
  ) {
    assertIncludes(
      problems(`[server]\nstatus_hosts = ${bad}\n${rule}`).join("\n"),
      "rules.toml:2: [server]: status_hosts: expected",
    );
  }
});

Deno.test("problems of one rule come in the order its keys are read", () => {
  const found = problems(
    passRule({
      listen: "127.0.0.1:8080",
      target: 80,
      extra: 'alarm_quiet = "soon"\nalarm_errors = "many"\nbandwidth = "fast"\nbalance = "random"',
    }),
  );
  const keys = found.map((problem) =>
    /(balance|alarm_quiet|alarm_errors|bandwidth)/.exec(problem)?.[1]
  );
  assertEquals(keys, ["balance", "alarm_quiet", "alarm_errors", "bandwidth"]);
});
