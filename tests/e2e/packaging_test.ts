/**
 * The release artefacts: the bundle runs by itself, the systemd unit passes
 * `systemd-analyze verify`, the OpenBSD rc.d script passes `sh -n` and
 * shellcheck (where those tools are installed; CI installs them).
 */
import { assert, assertEquals, assertMatch } from "../assert.ts";
import { fileURLToPath } from "node:url";
import { tempDir } from "./helpers.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

async function has(command: string): Promise<boolean> {
  return await new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" })
    .output().then(() => true, () => false);
}

async function run(command: string, args: string[], cwd?: string) {
  const output = await new Deno.Command(command, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("the bundle is one file that runs from an empty folder with an empty Deno cache", async () => {
  await using dir = await tempDir();
  await using cache = await tempDir();
  const bundled = await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    `${ROOT}/main.ts`,
    "-o",
    `${dir}/portbounce.js`,
  ]);
  assertEquals(bundled.code, 0, bundled.stderr);
  const version = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--cached-only",
      "--no-prompt",
      "--unstable-net",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-sys=networkInterfaces",
      `${dir}/portbounce.js`,
      "version",
    ],
    cwd: dir,
    env: { DENO_DIR: cache },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(version.code, 0, new TextDecoder().decode(version.stderr));
  const meta = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  assertMatch(new TextDecoder().decode(version.stdout), new RegExp(`^portbounce ${meta.version} `));
});

Deno.test({
  name: "the systemd units (plain, and the takeover template) pass systemd-analyze verify",
  ignore: !(await has("systemd-analyze")),
  async fn() {
    await using dir = await tempDir();
    for (
      const [file, unitName] of [
        ["portbounce.service", "portbounce.service"],
        ["portbounce@.service", "portbounce@blue.service"],
      ]
    ) {
      // verify checks that the programs exist: point it at this machine's deno.
      const unit = (await Deno.readTextFile(`${ROOT}/packaging/systemd/${file}`))
        .replaceAll("/usr/local/bin/deno", Deno.execPath());
      await Deno.writeTextFile(`${dir}/${file}`, unit);
      const verified = await run("systemd-analyze", ["verify", `${dir}/${unitName}`]);
      assertEquals(verified.code, 0, verified.stderr);
      assertEquals(verified.stderr.trim(), "", "no warnings either");
    }
    const template = await Deno.readTextFile(`${ROOT}/packaging/systemd/portbounce@.service`);
    for (const line of ["User=portbounce", "RuntimeDirectoryPreserve=yes", " run --takeover "]) {
      assert(template.includes(line), line);
    }
  },
});

Deno.test("the OpenBSD rc.d script parses (sh -n) and passes shellcheck where installed", async () => {
  const script = `${ROOT}/packaging/openbsd/portbounce`;
  const parsed = await run("sh", ["-n", script]);
  assertEquals(parsed.code, 0, parsed.stderr);
  if (!(await has("shellcheck"))) {
    console.log("    shellcheck not installed (apt-get install shellcheck): skipped that part");
    return;
  }
  const checked = await run("shellcheck", ["-s", "ksh", "-e", "SC1091", script]);
  assertEquals(checked.code, 0, checked.stdout);
  const text = await Deno.readTextFile(script);
  for (
    const line of [
      'daemon_user="_portbounce"',
      "rc_bg=YES",
      'rc_cmd "$1"',
      "--pid-file /var/run/portbounce/portbounce.pid",
      "--takeover",
    ]
  ) {
    assert(text.includes(line), line);
  }
});
