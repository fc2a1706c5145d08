/**
 * The office move, end to end, in network namespaces this test creates (root
 * only; skipped with a message elsewhere). Documentation-range addresses exist
 * only inside those namespaces:
 *
 *   client ns                transition ns                     old-site ns
 *   198.51.100.2  -------  198.51.100.1 | 192.0.2.1  -------  192.0.2.10
 *   (.200 too)              new addresses on lo:               nginx :80,
 *                           203.0.113.10 web, .22 ssh, .53 dns   echo :22, :53
 *
 * Clients reach the services at the new addresses through portbounce; then
 * "web" moves (its rule is removed with SIGHUP and 203.0.113.10 is served by the
 * old site directly, routed by the transition host) while an ssh session and
 * DNS traffic on other rules keep flowing.
 */
import { fileURLToPath } from "node:url";
import { assertEquals, assertMatch } from "../assert.ts";
import { delay, startPortbounce } from "./helpers.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/", import.meta.url));
const tag = String(Deno.pid % 10000);
const NS = { client: `pbc${tag}`, transition: `pbt${tag}`, old: `pbo${tag}` };

async function run(command: string, args: string[], allowFail = false): Promise<string> {
  const result = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  if (!result.success && !allowFail) throw new Error(`${command} ${args.join(" ")}: ${text}`);
  return text;
}

const ip = (...args: string[]) => run("ip", args);
const inNs = (ns: string, command: string, args: string[], allowFail = false) =>
  run("ip", ["netns", "exec", ns, command, ...args], allowFail);

function spawnInNs(ns: string, command: string, args: string[], stdin: "piped" | "null" = "null") {
  return new Deno.Command("ip", {
    args: ["netns", "exec", ns, command, ...args],
    stdin,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Whether this machine lets us make namespaces (root with iproute2). */
async function namespacesAvailable(): Promise<string | null> {
  if (Deno.uid() !== 0) return "not root";
  try {
    await ip("netns", "add", `pbprobe${tag}`);
    await ip("netns", "del", `pbprobe${tag}`);
    return null;
  } catch (error) {
    return `ip netns unavailable: ${(error as Error).message.split("\n")[0]}`;
  }
}

const unavailable = await namespacesAvailable();
const nginx = await run("sh", ["-c", "command -v nginx"], true).then((t) => t.trim() !== "");
if (unavailable) console.warn(`network-namespace test skipped: ${unavailable}`);
else if (!nginx) {
  console.warn(
    "network-namespace test skipped: nginx is not installed (apt-get install nginx-light)",
  );
}

async function buildNetwork(): Promise<void> {
  for (const ns of Object.values(NS)) await ip("netns", "add", ns);
  await ip("link", "add", `pbc${tag}a`, "type", "veth", "peer", "name", `pbt${tag}a`);
  await ip("link", "set", `pbc${tag}a`, "netns", NS.client);
  await ip("link", "set", `pbt${tag}a`, "netns", NS.transition);
  await ip("link", "add", `pbt${tag}b`, "type", "veth", "peer", "name", `pbo${tag}b`);
  await ip("link", "set", `pbt${tag}b`, "netns", NS.transition);
  await ip("link", "set", `pbo${tag}b`, "netns", NS.old);
  const steps: [string, string[]][] = [
    [NS.client, ["addr", "add", "198.51.100.2/24", "dev", `pbc${tag}a`]],
    [NS.client, ["addr", "add", "198.51.100.200/24", "dev", `pbc${tag}a`]],
    [NS.transition, ["addr", "add", "198.51.100.1/24", "dev", `pbt${tag}a`]],
    [NS.transition, ["addr", "add", "192.0.2.1/24", "dev", `pbt${tag}b`]],
    [NS.old, ["addr", "add", "192.0.2.10/24", "dev", `pbo${tag}b`]],
    [NS.transition, ["addr", "add", "203.0.113.10/32", "dev", "lo"]],
    [NS.transition, ["addr", "add", "203.0.113.22/32", "dev", "lo"]],
    [NS.transition, ["addr", "add", "203.0.113.53/32", "dev", "lo"]],
  ];
  for (const [ns, args] of steps) await ip("-n", ns, ...args);
  for (
    const [ns, dev] of [[NS.client, `pbc${tag}a`], [NS.transition, `pbt${tag}a`], [
      NS.transition,
      `pbt${tag}b`,
    ], [NS.old, `pbo${tag}b`]]
  ) {
    await ip("-n", ns, "link", "set", dev, "up");
  }
  for (const ns of Object.values(NS)) await ip("-n", ns, "link", "set", "lo", "up");
  await ip("-n", NS.client, "route", "add", "203.0.113.0/24", "via", "198.51.100.1");
  await ip("-n", NS.old, "route", "add", "198.51.100.0/24", "via", "192.0.2.1");
  await inNs(NS.transition, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
}

async function tearDown(): Promise<void> {
  for (const ns of Object.values(NS)) {
    // Whatever still runs inside (nginx's worker outlives a killed master) would outlive the
    // namespace too: end it first.
    const pids = await ip("netns", "pids", ns).catch(() => "");
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    await ip("netns", "del", ns).catch(() => {});
  }
}

/** Reads lines from a child's stdout as they come. */
function lineReader(stream: ReadableStream<Uint8Array>) {
  const lines: string[] = [];
  let partial = "";
  const done = (async () => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      partial += chunk;
      const parts = partial.split("\n");
      partial = parts.pop()!;
      lines.push(...parts);
    }
  })();
  return {
    lines,
    done,
    async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const found = lines.find((line) => pattern.test(line));
        if (found) return found;
        if (Date.now() > end) throw new Error(`no line matched ${pattern}:\n${lines.join("\n")}`);
        await delay(20);
      }
    },
  };
}

Deno.test({
  name:
    "the office move in network namespaces: services move one by one, other sessions never break",
  ignore: unavailable !== null || !nginx,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "portbounce-netns-" });
    const children: Deno.ChildProcess[] = [];
    try {
      await buildNetwork();
      // The old site: nginx (logging who connects) and the echo services.
      // nginx workers run as an unprivileged user: the page must be readable to them.
      await Deno.chmod(dir, 0o755);
      await Deno.mkdir(`${dir}/www`, { mode: 0o755 });
      await Deno.writeTextFile(`${dir}/www/index.html`, "old-site web\n");
      await Deno.writeTextFile(
        `${dir}/nginx.conf`,
        `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 64; }
http { log_format who '$remote_addr'; access_log ${dir}/access.log who;
  server { listen 0.0.0.0:80; root ${dir}/www; } }
`,
      );
      const web = spawnInNs(NS.old, "nginx", [
        "-c",
        `${dir}/nginx.conf`,
        "-p",
        dir,
        "-e",
        `${dir}/error.log`,
      ]);
      children.push(web);
      const services = spawnInNs(NS.old, Deno.execPath(), ["run", "-A", `${FIXTURES}old_site.ts`]);
      children.push(services);
      const serviceLog = lineReader(services.stdout);
      await serviceLog.waitFor(/^ready$/);

      // The transition host.
      const rules = (withWeb: boolean) =>
        `[server]\ndrain_timeout = "2s"\n` +
        (withWeb
          ? `[[rule]]\nname = "web"\nlisten = "203.0.113.10:80"\nbounce_to = "192.0.2.10:80"\n`
          : "") +
        `[[rule]]\nname = "ssh"\nlisten = "203.0.113.22:22"\nfrom = "198.51.100.0/25"\nbounce_to = "192.0.2.10:22"\n` +
        `[[rule]]\nname = "dns"\nprotocol = "udp"\nlisten = "203.0.113.53:53"\nbounce_to = "192.0.2.10:53"\n`;
      await Deno.writeTextFile(`${dir}/rules.toml`, rules(true));
      await using bouncer = await startPortbounce(["run", "-c", `${dir}/rules.toml`], dir, [
        "ip",
        "netns",
        "exec",
        NS.transition,
      ]);

      // Clients reach every service at its new address, through the bouncer.
      assertEquals(
        await inNs(NS.client, "curl", ["-s", "--max-time", "5", "http://203.0.113.10/"]),
        "old-site web\n",
      );
      const dnsQuery = () =>
        inNs(NS.client, "sh", ["-c", "printf 'query' | socat -T2 - UDP:203.0.113.53:53"], true);
      assertEquals(await dnsQuery(), "query");
      // A long ssh-like session on another rule, open through the whole move.
      const ssh = spawnInNs(NS.client, "socat", ["-", "TCP:203.0.113.22:22"], "piped");
      children.push(ssh);
      const sshOut = lineReader(ssh.stdout);
      const sshIn = ssh.stdin.getWriter();
      // The target sees the bouncer's own address, not the client's.
      await sshOut.waitFor(/^peer=192\.0\.2\.1$/);
      await sshIn.write(new TextEncoder().encode("before the move\n"));
      await sshOut.waitFor(/^before the move$/);
      // A client outside the ssh rule's from never reaches the target.
      const acceptedBefore = serviceLog.lines.filter((l) => l.startsWith("accepted")).length;
      const outsider = await inNs(
        NS.client,
        "sh",
        ["-c", "printf 'hello' | socat -T2 - TCP:203.0.113.22:22,bind=198.51.100.200"],
        true,
      );
      assertEquals(outsider, "");
      await bouncer.log.waitFor({
        event: "block",
        rule: null,
        client: /^198\.51\.100\.200:\d+$/,
        listen: "203.0.113.22:22",
        reason: "no-matching-rule",
      });
      await delay(200);
      assertEquals(serviceLog.lines.filter((l) => l.startsWith("accepted")).length, acceptedBefore);
      assertEquals((await Deno.readTextFile(`${dir}/access.log`)).trim().split("\n"), [
        "192.0.2.1",
      ]);

      // web moves: remove its rule (SIGHUP), give its new address to the old site.
      await Deno.writeTextFile(`${dir}/rules.toml`, rules(false));
      bouncer.signal("SIGHUP");
      assertMatch(
        (await bouncer.log.waitFor({ message: /^reload: listeners/ })).message!,
        /0 added, 2 kept, 1 removed \(tcp 203\.0\.113\.10:80\); rules: 0 added, 0 changed, 1 removed \(web\), 2 unchanged; sessions: 0 draining/,
      );
      await ip("-n", NS.transition, "addr", "del", "203.0.113.10/32", "dev", "lo");
      await ip("-n", NS.old, "addr", "add", "203.0.113.10/32", "dev", "lo");
      await ip("-n", NS.transition, "route", "add", "203.0.113.10/32", "via", "192.0.2.10");
      // The new address is now served by the old site itself: nginx sees the real client.
      assertEquals(
        await inNs(NS.client, "curl", ["-s", "--max-time", "5", "http://203.0.113.10/"]),
        "old-site web\n",
      );
      assertEquals((await Deno.readTextFile(`${dir}/access.log`)).trim().split("\n"), [
        "192.0.2.1",
        "198.51.100.2",
      ]);

      // Sessions and traffic on the other rules went on.
      await sshIn.write(new TextEncoder().encode("after the move\n"));
      await sshOut.waitFor(/^after the move$/);
      assertEquals(await dnsQuery(), "query");
      await sshIn.close();
      await ssh.status;
      await bouncer.log.waitFor({ event: "disconnect", rule: "ssh", reason: "client-closed" });
      assertEquals(
        bouncer.log.filter({ event: "disconnect", rule: "ssh", reason: /^(drained|error)$/ }),
        [],
        "the ssh session was never cut",
      );
      await bouncer.log.waitFor({ event: "connect", rule: "dns", client: /^198\.51\.100\.2:/ });
    } finally {
      for (const child of children) {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }
      await Promise.allSettled(children.map((child) => child.status));
      await tearDown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
