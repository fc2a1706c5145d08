/**
 * Headless Chromium for the tests that render the status page: whether it is
 * installed, and one run of it as the probe starts it (no network of its own,
 * a fresh profile each time).
 */

/** Whether Debian's chromium is on PATH. */
export const chromiumInstalled: boolean = await new Deno.Command("chromium", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success, () => false);

/** Runs headless Chromium with `args`; resolves to what it printed. */
export async function chromiumRun(args: string[]): Promise<string> {
  const profile = await Deno.makeTempDir({ prefix: "portbounce-chromium-" });
  try {
    const output = await new Deno.Command("chromium", {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        `--user-data-dir=${profile}`,
        ...args,
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(output.stdout);
  } finally {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}
