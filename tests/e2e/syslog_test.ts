/**
 * `log = ["syslog"]`: one RFC 3164 datagram per event to a unix datagram
 * socket, checked at a plain socket and at a real rsyslogd, including a
 * restart of the daemon while portbounce runs.
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { passRule } from "../fixtures/rules.ts";
import { delay, echo, exchange, startBouncer, tcpServer, tempDir, waitUntil } from "./helpers.ts";

Deno.test("syslog: one datagram per event, tagged portbounce[PID], facility and severity in PRI", async () => {
  await using target = tcpServer(echo);
  await using dir = await tempDir();
  const path = `${dir}/log.sock`;
  const socket = Deno.listenDatagram({ transport: "unixpacket", path });
  try {
    await using bouncer = await startBouncer(
      `[server]\nlog = ["syslog:${path}"]\nsyslog_facility = "local3"\n` +
        passRule({ listen: "127.0.0.1:0", target: target.port }),
      ["--log-format", "text"],
    );
    const pid = bouncer.process.pid;
    const received: string[] = [];
    const reading = (async () => {
      for (;;) {
        try {
          const [data] = await socket.receive();
          received.push(new TextDecoder().decode(data));
        } catch {
          return;
        }
      }
    })();
    assertEquals(await exchange(bouncer.port(), "hello"), "hello");
    await waitUntil(() => received.some((line) => line.includes(" tcp disconnect ")));
    socket.close();
    await reading;
    // local3 = 19: info is 19*8+6 = 158.
    const connect = received.find((line) => line.includes(" tcp connect "));
    assert(connect, received.join("\n"));
    assertMatch(
      connect,
      new RegExp(
        `^<158>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d portbounce\\[${pid}\\]: pass\\(r\\) tcp connect 127\\.0\\.0\\.1:\\d+ -> `,
      ),
    );
    assert(!connect.includes("\n"), "one line per datagram");
    assert(received.some((line) => /^<158>.* tcp disconnect .* reason=client-closed$/.test(line)));
  } finally {
    try {
      socket.close();
    } catch {
      // Closed above.
    }
  }
});

const rsyslogd = await new Deno.Command("rsyslogd", {
  args: ["-v"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success, () => false);

Deno.test({
  name: "syslog: lines reach a real rsyslogd, and again after it restarts; lost ones are counted",
  ignore: !rsyslogd || Deno.uid() !== 0,
  async fn() {
    await using target = tcpServer(echo);
    await using dir = await tempDir();
    const socket = `${dir}/log.sock`;
    const messages = `${dir}/messages`;
    await Deno.writeTextFile(
      `${dir}/rsyslog.conf`,
      `global(workDirectory="${dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="${socket}" CreatePath="on")
template(name="plain" type="string" string="%syslogtag% %syslogfacility-text%.%syslogseverity-text% %msg%\\n")
*.* action(type="omfile" file="${messages}" template="plain")
`,
    );
    const start = () =>
      new Deno.Command("rsyslogd", {
        args: ["-n", "-f", `${dir}/rsyslog.conf`, "-i", `${dir}/rsyslog.pid`],
        stdout: "null",
        stderr: "null",
      }).spawn();
    const waitFor = async (pattern: RegExp) => {
      for (let i = 0; i < 100; i++) {
        const text = await Deno.readTextFile(messages).catch(() => "");
        if (pattern.test(text)) return text;
        await delay(50);
      }
      throw new Error(`${pattern} not in ${await Deno.readTextFile(messages).catch(() => "")}`);
    };
    let daemon = start();
    try {
      for (let i = 0; i < 50 && !(await Deno.stat(socket).catch(() => null)); i++) await delay(50);
      await using bouncer = await startBouncer(
        `[server]\nlog = ["syslog:${socket}", "stderr"]\nstatus = "127.0.0.1:0"\n` +
          passRule({ listen: "127.0.0.1:0", target: target.port }),
        ["--log-format", "text"],
      );
      assertEquals(await exchange(bouncer.port(), "one"), "one");
      const first = await waitFor(/portbounce\[\d+\]: daemon\.info\s+pass\(r\) tcp disconnect/);
      assertMatch(first, new RegExp(`portbounce\\[${bouncer.process.pid}\\]:`));
      // The daemon goes away; relaying goes on and the lines are counted as lost.
      daemon.kill("SIGTERM");
      await daemon.status;
      assertEquals(await exchange(bouncer.port(), "two"), "two");
      const log = async () =>
        (await fetch(`http://${bouncer.ready.status}/status.json`).then((r) => r.json())).log;
      await waitUntil(async () => (await log()).lines_failed > 0, "lines counted as lost", {
        state: log,
      });
      // Back again: the next lines arrive, no reconnect needed.
      daemon = start();
      await waitUntil(async () => await Deno.stat(socket).then(() => true, () => false));
      assertEquals(await exchange(bouncer.port(), "three"), "three");
      const after = await waitFor(/(tcp disconnect[^\n]*\n[\s\S]*){2}/);
      assert(after.split("\n").filter((l) => l.includes("tcp disconnect")).length >= 2);
    } finally {
      daemon.kill("SIGTERM");
      await daemon.status;
    }
  },
});
