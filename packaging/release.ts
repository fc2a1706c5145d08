/**
 * `deno task release`: builds dist/ for a release: the single-file bundle,
 * the Linux binaries where a Deno runtime to embed is at hand (DENORT_BIN),
 * the service files, and SHA256SUMS. Says what it built, and what it
 * skipped and why.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const DIST = `${ROOT}dist`;
const meta = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));

async function deno(args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`deno ${args.join(" ")}:\n${new TextDecoder().decode(stderr)}`);
}

const built: string[] = [];
const skipped: string[] = [];
await Deno.remove(DIST, { recursive: true }).catch(() => {});
await Deno.mkdir(DIST, { recursive: true });

await deno(["task", "--quiet", "bundle"]);
built.push("portbounce.js");

if (Deno.env.get("DENORT_BIN")) {
  await deno(["task", "--quiet", "compile"]);
  built.push("portbounce-x86_64-linux", "portbounce-aarch64-linux");
} else {
  skipped.push(
    "portbounce-x86_64-linux, portbounce-aarch64-linux: DENORT_BIN is not set (deno compile downloads the runtime it embeds; point DENORT_BIN at a denort binary)",
  );
}

for (
  const file of [
    "packaging/systemd/portbounce.service",
    "packaging/systemd/portbounce@.service",
    "packaging/openbsd/portbounce",
  ]
) {
  await Deno.copyFile(`${ROOT}${file}`, `${DIST}/${basename(file)}`);
  built.push(basename(file));
}

const sums: string[] = [];
for (const name of built) {
  const hash = createHash("sha256").update(await Deno.readFile(`${DIST}/${name}`)).digest("hex");
  sums.push(`${hash}  ${name}`);
}
await Deno.writeTextFile(`${DIST}/SHA256SUMS`, sums.join("\n") + "\n");
built.push("SHA256SUMS");

console.log(`portbounce ${meta.version}: dist/`);
for (const name of built) {
  const { size } = await Deno.stat(`${DIST}/${name}`);
  console.log(`  built    ${name} (${size} bytes)`);
}
for (const why of skipped) console.log(`  skipped  ${why}`);
