/**
 * The end of a move, through the real CLI: `portbounce clients` says who
 * used each rule, `portbounce retire` refuses while anyone did, and otherwise
 * removes the rule from the file (every other byte kept, a backup beside it)
 * and has the running instance reload; with --dry-run it changes nothing,
 * with no instance it edits the file only, and two retires take turns.
 */
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import {
  echo,
  exchange,
  freePortRange,
  portbounceCommand,
  runCli,
  sha256,
  startPortbounce,
  tcpServer,
  tempDir,
} from "./helpers.ts";

function rules(dir: string, status: number, target: number, ports: [number, number, number]) {
  return `# The move of www and files.
[server]
status = "127.0.0.1:${status}"
pid_file = "${dir}/portbounce.pid"
client_names = "off"

# www moved on Monday; a few clients still use the old address.
[[rule]]
name = "www-old"
listen = "127.0.0.1:${ports[0]}"
bounce_to = "127.0.0.1:${target}"   # the old server

# files: nobody yet
[[rule]]
name = "files-old"
listen = "127.0.0.1:${ports[1]}"
bounce_to = "127.0.0.1:${target}"

[[rule]]
name = "www-new"
listen = "127.0.0.1:${ports[2]}"
bounce_to = "127.0.0.1:${target}"
`;
}

Deno.test("clients and retire: refused while in use, forced, dry run, reloaded, a quiet rule goes", async () => {
  await using target = tcpServer(echo);
  const base = freePortRange(4);
  const ports: [number, number, number] = [base, base + 1, base + 2];
  await using dir = await tempDir();
  const file = `${dir}/rules.toml`;
  const text = rules(`${dir}`, base + 3, target.port, ports);
  await Deno.writeTextFile(file, text);
  await using _bouncer = await startPortbounce(["run", "-c", file]);
  assertEquals(await exchange(ports[0], "hello"), "hello");

  const listed = await runCli(["clients", "-c", file]);
  assertEquals(listed.code, 0, listed.stderr);
  assertMatch(
    listed.stdout,
    /^127\.0\.0\.1\s+-\s+www-old\s+127\.0\.0\.1:\d+ .* just now\s+1\s+5 B\/5 B$/m,
  );
  const json = JSON.parse((await runCli(["clients", "www-old", "-c", file, "--json"])).stdout);
  assertEquals(json.rules[0].clients.map((c: { address: string }) => c.address), ["127.0.0.1"]);

  // In use within the hour: refused, the file untouched.
  const refused = await runCli(["retire", "www-old", "-c", file]);
  assertEquals(refused.code, 1, refused.stderr);
  assertIncludes(refused.stdout, "1 client used rule www-old within 1h:");
  assertIncludes(refused.stdout, "127.0.0.1");
  assertIncludes(refused.stderr, "refused: rule www-old is still in use");
  assertEquals(sha256(await Deno.readFile(file)), sha256(new TextEncoder().encode(text)));

  // The instance runs (its pid file answers) but its endpoint does not: unknown, not "nobody".
  const silent = await runCli([
    "retire",
    "www-old",
    "-c",
    file,
    "--url",
    `127.0.0.1:${freePortRange(1)}`,
  ]);
  assertEquals(silent.code, 1, silent.stdout);
  assertIncludes(silent.stderr, "who uses rule www-old is unknown (--force removes it anyway)");
  assertEquals(await Deno.readTextFile(file), text);
  // Asked for all of history (a duration past the clock): the ledger's every client.
  const ever = await runCli(["retire", "www-old", "-c", file, "--quiet-for", "99999999999999999"]);
  assertEquals(ever.code, 1, ever.stderr);
  assertIncludes(ever.stdout, "1 client used rule www-old ever");

  // A dry run shows what would go, and changes nothing.
  const dry = await runCli(["retire", "www-old", "-c", file, "--force", "--dry-run"]);
  assertEquals(dry.code, 0, dry.stderr);
  assertIncludes(dry.stdout, `--- ${file}`);
  assertIncludes(dry.stdout, "-# www moved on Monday; a few clients still use the old address.");
  assertIncludes(dry.stdout, '-name = "www-old"');
  assertIncludes(dry.stdout, "would remove rule www-old");
  assertEquals(await Deno.readTextFile(file), text);

  // A misspelt rule: no such rule, and the likely one.
  const typo = await runCli(["retire", "www-odl", "-c", file]);
  assertEquals(typo.code, 2);
  assertIncludes(typo.stderr, `has no rule named "www-odl"; did you mean "www-old"?`);

  // Forced: the rule's table and its comment go, every other byte stays, a backup is kept,
  // and the instance reloads (its listener closes).
  const forced = await runCli(["retire", "www-old", "-c", file, "--force"]);
  assertEquals(forced.code, 0, forced.stderr);
  const after = await Deno.readTextFile(file);
  const start = text.indexOf("# www moved on Monday");
  const end = text.indexOf("# files: nobody yet");
  assertEquals(after, text.slice(0, start) + text.slice(end));
  const backup = forced.stdout.match(/backup (\S+\.bak)/)![1];
  assertEquals(await Deno.readTextFile(backup), text);
  assertMatch(forced.stdout, /process \d+ reloaded \(applied\): /);
  let closed = false;
  try {
    await exchange(ports[0], "x");
  } catch {
    closed = true;
  }
  assert(closed, "the retired rule's listener is closed after the reload");
  const status = await fetch(`http://127.0.0.1:${base + 3}/status.json`).then((r) => r.json());
  assertEquals(status.rules.map((r: { name: string }) => r.name), ["files-old", "www-new"]);

  // A rule nobody used goes without --force.
  const quiet = await runCli(["retire", "files-old", "-c", file]);
  assertEquals(quiet.code, 0, quiet.stderr);
  assertIncludes(quiet.stdout, "nobody used rule files-old within 1h: removed rule files-old");
  // The last rule: a file without rules is no file to run; refused, nothing written.
  const last = await runCli(["retire", "www-new", "-c", file, "--force"]);
  assertEquals(last.code, 2, last.stdout);
  assertIncludes(last.stderr, "www-new is the last rule of");
  assertIncludes(await Deno.readTextFile(file), 'name = "www-new"');
  assertEquals(await exchange(ports[2], "still"), "still");
});

Deno.test("retire with no instance running edits the file only; a second retire waits for the first", async () => {
  await using dir = await tempDir();
  const file = `${dir}/rules.toml`;
  const text = rules(`${dir}`, freePortRange(1), 1, [2, 3, 4]);
  await Deno.writeTextFile(file, text);
  const alone = await runCli(["retire", "files-old", "-c", file]);
  assertEquals(alone.code, 0, alone.stderr);
  assertIncludes(alone.stdout, "no instance answers at 127.0.0.1:");
  assertIncludes(alone.stdout, "it takes effect at the next start");
  assertEquals((await Deno.readTextFile(file)).includes("files-old"), false);

  // Another retire holds the file: this one waits, then reads what the first left.
  const lock = await Deno.open(`${file}.lock`, { write: true, create: true });
  await lock.lock(true);
  const waiting = (await portbounceCommand(["retire", "www-old", "-c", file], {
    stdout: "piped",
  })).spawn();
  const stderr = waiting.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let said = "";
  while (!said.includes("waiting for it")) {
    const { value, done } = await stderr.read();
    if (done) break;
    said += value;
  }
  assertIncludes(said, `another retire is editing ${file}; waiting for it`);
  // While it waits, the file is another's to change.
  await Deno.writeTextFile(file, (await Deno.readTextFile(file)) + "\n# edited meanwhile\n");
  await lock.unlock();
  lock.close();
  // Read the rest of stderr (the pipe must drain), then the exit status.
  while (!(await stderr.read()).done) { /* drained */ }
  const [{ code }, stdout] = await Promise.all([
    waiting.status,
    new Response(waiting.stdout).text(),
  ]);
  assertEquals(code, 0, stdout);
  assertIncludes(stdout, "removed rule www-old");
  const final = await Deno.readTextFile(file);
  assertEquals(final.includes("www-old"), false);
  assertEquals(final.includes("files-old"), false);
  assert(final.endsWith("# edited meanwhile\n"), final);
});
