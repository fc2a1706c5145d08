/**
 * A takeover meeting a reload: the old instance (in-process, with workers
 * that answer reloads late) finishes the reload under way before it hands
 * over, so nothing that reload binds outlives the hand-over; the new instance
 * (the CLI) lives through a SIGHUP while it waits, and reloads once it runs.
 */
import { assert, assertEquals } from "../assert.ts";
import { startDaemon } from "../harness.ts";
import {
  delay,
  echo,
  freePortRange,
  portIsFree,
  startPortbounce,
  tcpServer,
  tempDir,
} from "./helpers.ts";

const SLOW_RELOAD = new URL("../fixtures/workers/slow_reload.ts", import.meta.url);

Deno.test({
  name:
    "a reload under way in the old instance ends before it hands over; a SIGHUP to the new one waits",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using dir = await tempDir();
    await using target = tcpServer(echo);
    const port = freePortRange(1);
    const statusPort = freePortRange(1);
    const rules = (status: number, extra = "") =>
      `[server]\nstatus = "127.0.0.1:${status}"\ndrain_timeout = "5s"\n` +
      `[[rule]]\nname = "web"\nlisten = "127.0.0.1:${port}"\nbounce_to = "127.0.0.1:${target.port}"\n` +
      extra;
    const pidFile = `${dir}/portbounce.pid`;
    await using old = await startDaemon(rules(statusPort), {
      workers: 2,
      workerModule: SLOW_RELOAD,
      pidFile,
    });
    // A live session keeps the old instance draining after the hand-over.
    const session = await Deno.connect({ hostname: "127.0.0.1", port });
    await session.write(new Uint8Array([1]));
    await session.read(new Uint8Array(1));
    const movedStatus = freePortRange(1);
    const addedPort = freePortRange(1);
    // The reload moves the status endpoint and adds a listener; its workers answer late.
    const reloading = old.reload(
      rules(
        movedStatus,
        `[[rule]]\nname = "added"\nlisten = "127.0.0.1:${addedPort}"\nbounce_to = "127.0.0.1:9"\n`,
      ),
    );
    await Deno.writeTextFile(`${dir}/new.toml`, rules(statusPort));
    const starting = startPortbounce(
      ["run", "-c", `${dir}/new.toml`, "--takeover", "--pid-file", pidFile],
      await Deno.makeTempDir({ dir: `${dir}`, prefix: "b" }),
    );
    // The new instance waits for the release meanwhile: signal it (a reload of every
    // instance during an upgrade). Without a handler yet, SIGHUP would end it.
    await delay(600);
    const found = await new Deno.Command("pgrep", { args: ["-f", `${dir}/new.toml`] }).output();
    const pids = new TextDecoder().decode(found.stdout).trim().split("\n").filter(Boolean);
    assert(pids.length > 0, "the new instance is running");
    for (const pid of pids) Deno.kill(Number(pid), "SIGHUP");
    await using fresh = await starting;
    await reloading;
    await fresh.waitForLine(/took over from process/);
    await old.log.waitFor({ message: /holds every port now/ });
    // What the old instance's reload bound went with the hand-over.
    assert(portIsFree(movedStatus), "no status endpoint left in the old instance");
    assert(portIsFree(addedPort), "no listener its reload added");
    // The new instance lived through the SIGHUP, and reloaded once it ran.
    await fresh.waitForLine(/reload: listeners/);
    assertEquals((await Deno.readTextFile(pidFile)).trim(), String(fresh.process.pid));
    session.close();
    assertEquals(await old.daemon.done, 0);
  },
});
