/**
 * The compiled binary and `deno task portbounce` must run with the same
 * permissions, and those must be the least the tool needs.
 */
import { assert, assertEquals } from "../assert.ts";

const meta = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));

function flagsOf(command: string): string[] {
  return command.split(/\s+/).filter((word) =>
    word.startsWith("--allow") || word.startsWith("--unstable") || word.startsWith("--deny") ||
    word.startsWith("--v8-flags")
  );
}

Deno.test("the run task and every compile target share one permission list", () => {
  const run = flagsOf(meta.tasks.portbounce);
  const compiles = (meta.tasks.compile as string).split("&&").map(flagsOf);
  assert(compiles.length >= 2, "compile builds x86_64 and aarch64");
  for (const compile of compiles) assertEquals(compile, run);
});

Deno.test("permissions are the least the tool needs", () => {
  const run = flagsOf(meta.tasks.portbounce);
  assertEquals(run, [
    "--unstable-net",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-sys=networkInterfaces",
    // A 1 MiB young generation: idle connections cost 18 KiB instead of 26 (bench/NOTES.md).
    "--v8-flags=--max-semi-space-size=2",
  ]);
  for (const forbidden of ["--allow-all", "-A", "--allow-run", "--allow-ffi", "--allow-env"]) {
    assert(!meta.tasks.portbounce.split(/\s+/).includes(forbidden), forbidden);
    assert(!meta.tasks.compile.split(/\s+/).includes(forbidden), forbidden);
  }
});

Deno.test("the service files run the bundle with the same permission list", async () => {
  const run = flagsOf(meta.tasks.portbounce);
  for (const unit of ["portbounce.service", "portbounce@.service"]) {
    const systemd = await Deno.readTextFile(
      new URL(`../../packaging/systemd/${unit}`, import.meta.url),
    );
    const execLines = systemd.split("\n").filter((line) => /^ExecStart(Pre)?=/.test(line));
    assertEquals(execLines.length, 2);
    for (const line of execLines) assertEquals(flagsOf(line), run, `${unit}: ${line}`);
  }
  const rc = await Deno.readTextFile(
    new URL("../../packaging/openbsd/portbounce", import.meta.url),
  );
  const flags = /^daemon_flags="([^"]*)"/m.exec(rc)![1];
  assertEquals(flagsOf(flags), run);
});
