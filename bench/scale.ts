/**
 * Thousands of rules: `deno task bench:scale`. Writes bench/results/scale.md.
 *
 * 1. New connections per request (wrk, `Connection: close`, to nginx) through
 *    a listener with one rule, and through one with 10,000 rules whose match
 *    is the last: interleaved rounds, and the median of each round's ratio.
 * 2. A reload of that 10,000-rule file (a rule renamed: every rule is
 *    compared, every listener kept) while one client does round trips of
 *    64 bytes through the bouncer back to back: how long the reload took
 *    (SIGHUP until its log line) and the slowest round trip while it ran,
 *    against the slowest of an equal time without a reload. And the same
 *    reload with the daemon in this process, a 1 ms timer beside it: the
 *    longest the event loop went without a turn, during the reload and in a
 *    quiet second (the round trips add the scheduling of three processes on
 *    shared cores; this is the bouncer's own loop).
 * 3. Memory of reloads: resident memory after 100 full reloads of a
 *    2,000-rule file, one after another (each waits for the one before).
 * 4. Reload storms: the new-connection rate through the 10,000-rule
 *    listener, and through one of 1,000 rules, while SIGHUP comes 20 times a
 *    second, the file unchanged, or rewritten (a rule renamed) before each
 *    signal; against the rate without reloads, interleaved rounds, the median
 *    of each round's ratio.
 *
 *   deno task bench:scale [--rounds 3] [--seconds 4] [--rules 10000]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { freePort, median, sleep, treeRssKiB, waitForListen } from "./measure.ts";
import { portbounceRun, startNginx, stopAll } from "./peers.ts";
import { wrk } from "./workloads.ts";
import { Daemon } from "../src/daemon/daemon.ts";
import { loadRuleFile } from "../src/server/rule_file.ts";

const BENCH = fileURLToPath(new URL("./", import.meta.url));

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string" },
    seconds: { type: "string" },
    rules: { type: "string" },
  },
});
const rounds = Number(values.rounds ?? 3);
const seconds = Number(values.seconds ?? 4);
const ruleCount = Number(values.rules ?? 10_000);

const HEAD = `[server]\ndrain_timeout = "1s"\n[defaults]\nlog = ["error"]\n`;

/** `count` rules on one listener; only the last one's `from` holds 127.0.0.1. */
function manyRules(count: number, listen: number, target: number, lastName = "last"): string {
  const parts = [HEAD];
  for (let i = 0; i < count - 1; i++) {
    parts.push(
      `[[rule]]\nname = "r${i}"\nfrom = "10.${(i >> 8) & 255}.${i & 255}.0/24"\n` +
        `listen = "127.0.0.1:${listen}"\nbounce_to = "127.0.0.1:${target}"\n`,
    );
  }
  parts.push(
    `[[rule]]\nname = "${lastName}"\nfrom = "127.0.0.0/8"\nlisten = "127.0.0.1:${listen}"\n` +
      `bounce_to = "127.0.0.1:${target}"\n`,
  );
  return parts.join("\n");
}

/** portbounce on `rules`, its log read line by line; resolves once it listens on `port`. */
async function startPortbounce(dir: string, rules: string, port: number) {
  const path = `${dir}/rules.toml`;
  await Deno.writeTextFile(path, rules);
  const child = new Deno.Command(Deno.execPath(), {
    args: await portbounceRun(path),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiting: (() => void)[] = [];
  (async () => {
    let partial = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop()!;
      lines.push(...parts);
      for (const wake of waiting.splice(0)) wake();
    }
  })();
  await waitForListen(port, 120_000);
  return {
    path,
    pid: child.pid,
    /** Waits for a log line matching `pattern` after the first `from` lines. */
    async lineAfter(from: number, pattern: RegExp): Promise<string> {
      for (;;) {
        const found = lines.slice(from).find((line) => pattern.test(line));
        if (found) return found;
        await new Promise<void>((resolve) => waiting.push(resolve));
      }
    },
    get lineCount() {
      return lines.length;
    },
    /** The log lines from the `from`th on. */
    lines: (from: number) => lines.slice(from),
    stop: () => stopAll([child]),
  };
}

/** 1: new connections per request, one rule against `ruleCount` rules, interleaved. */
async function measureRate(dir: string): Promise<{ one: number; many: number; ratio: number }> {
  const http = freePort();
  const stopNginx = await startNginx(dir, http, freePort());
  const rates: Record<"one" | "many", number[]> = { one: [], many: [] };
  try {
    for (let round = 0; round < rounds; round++) {
      const order: ("one" | "many")[] = round % 2 === 0 ? ["one", "many"] : ["many", "one"];
      for (const variant of order) {
        const listen = freePort();
        const bouncer = await startPortbounce(
          dir,
          manyRules(variant === "one" ? 1 : ruleCount, listen, http),
          listen,
        );
        try {
          const rate = await wrk(listen, seconds, true);
          console.error(
            `round ${round + 1}/${rounds} ${variant} rule(s): ${rate.toFixed(0)} conn/s`,
          );
          rates[variant].push(rate);
        } finally {
          await bouncer.stop();
        }
      }
    }
  } finally {
    await stopNginx();
  }
  return {
    one: median(rates.one),
    many: median(rates.many),
    ratio: median(rates.many.map((many, i) => many / rates.one[i])),
  };
}

/** A TCP echo in this process, for the round trips. */
function echoServer(): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        try {
          await conn.readable.pipeTo(conn.writable);
        } catch {
          // The client went away.
        }
      })();
    }
  })().catch(() => {});
  return { port: listener.addr.port, close: () => listener.close() };
}

/** Round trips of 64 bytes on one connection, back to back, until `until` resolves; each in ms. */
async function roundTrips(port: number, until: Promise<unknown>): Promise<number[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const out = new Uint8Array(64).fill(7);
  const back = new Uint8Array(64);
  const times: number[] = [];
  let done = false;
  until.then(() => done = true);
  try {
    while (!done) {
      const start = performance.now();
      await conn.write(out);
      let got = 0;
      while (got < 64) {
        const n = await conn.read(back.subarray(got));
        if (n === null) throw new Error("the bouncer closed the round-trip connection");
        got += n;
      }
      times.push(performance.now() - start);
    }
  } finally {
    conn.close();
  }
  return times;
}

/** 2: reloads of the big file while round trips run; the same time without a reload. */
async function measureReload(dir: string) {
  const echo = echoServer();
  const listen = freePort();
  const results: { reloadMs: number; worstDuring: number; worstQuiet: number }[] = [];
  const bouncer = await startPortbounce(dir, manyRules(ruleCount, listen, echo.port), listen);
  try {
    for (let round = 0; round < rounds; round++) {
      // Quiet: round trips for five times as long as the last reload took (at least a
      // second), which also lets the spacing of reloads pass (four times the last one).
      const quietMs = Math.max(1_000, 5 * (results.at(-1)?.reloadMs ?? 0));
      const quiet = await roundTrips(listen, sleep(quietMs));
      const from = bouncer.lineCount;
      await Deno.writeTextFile(
        bouncer.path,
        manyRules(ruleCount, listen, echo.port, `last-${round}`),
      );
      const started = performance.now();
      const reloaded = bouncer.lineAfter(from, /reload: listeners/);
      const during = roundTrips(listen, reloaded);
      Deno.kill(bouncer.pid, "SIGHUP");
      await reloaded;
      const reloadMs = performance.now() - started;
      const times = await during;
      const result = {
        reloadMs,
        worstDuring: Math.max(...times),
        worstQuiet: Math.max(...quiet),
      };
      console.error(
        `reload ${round + 1}/${rounds}: ${reloadMs.toFixed(0)} ms; slowest round trip ${
          result.worstDuring.toFixed(1)
        } ms (without a reload: ${result.worstQuiet.toFixed(1)} ms)`,
      );
      results.push(result);
    }
  } finally {
    await bouncer.stop();
    echo.close();
  }
  return {
    reloadMs: median(results.map((r) => r.reloadMs)),
    worstDuring: median(results.map((r) => r.worstDuring)),
    worstQuiet: median(results.map((r) => r.worstQuiet)),
  };
}

/**
 * 4: the connection rate through a listener of `count` rules under SIGHUP at
 * 20/s (the file unchanged or rewritten each time), against none.
 */
async function measureStorm(dir: string, count: number) {
  const http = freePort();
  const stopNginx = await startNginx(dir, http, freePort());
  const listen = freePort();
  const bouncer = await startPortbounce(dir, manyRules(count, listen, http), listen);
  const variants = ["quiet", "unchanged", "rewritten"] as const;
  const rates: Record<(typeof variants)[number], number[]> = {
    quiet: [],
    unchanged: [],
    rewritten: [],
  };
  const reloads: Record<(typeof variants)[number], number[]> = {
    quiet: [],
    unchanged: [],
    rewritten: [],
  };
  try {
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const variant of order) {
        const from = bouncer.lineCount;
        let signals = 0;
        const storm = variant === "quiet" ? undefined : setInterval(() => {
          if (variant === "rewritten") {
            // Whole or not at all (a reload must not read it half-written): write, then rename.
            Deno.writeTextFileSync(
              `${bouncer.path}.new`,
              manyRules(count, listen, http, `last-${signals % 2}`),
            );
            Deno.renameSync(`${bouncer.path}.new`, bouncer.path);
          }
          Deno.kill(bouncer.pid, "SIGHUP");
          signals++;
        }, 50);
        const rate = await wrk(listen, seconds, true);
        clearInterval(storm);
        // Let the last reload finish before the next run: no new line for 1.5 s.
        for (let seen = -1; signals > 0 && seen !== bouncer.lineCount;) {
          seen = bouncer.lineCount;
          await sleep(1_500);
        }
        const done = bouncer.lines(from).filter((line) => /reload: listeners/.test(line)).length;
        console.error(
          `storm, ${count} rules, round ${round + 1}/${rounds} ${variant}: ${
            rate.toFixed(0)
          } conn/s, ${signals} SIGHUP, ${done} reloads`,
        );
        rates[variant].push(rate);
        reloads[variant].push(done);
      }
    }
  } finally {
    await bouncer.stop();
    await stopNginx();
  }
  const ratio = (variant: "unchanged" | "rewritten") =>
    median(rates[variant].map((rate, i) => rate / rates.quiet[i]));
  return {
    count,
    quiet: median(rates.quiet),
    unchanged: {
      rate: median(rates.unchanged),
      ratio: ratio("unchanged"),
      reloads: median(reloads.unchanged),
    },
    rewritten: {
      rate: median(rates.rewritten),
      ratio: ratio("rewritten"),
      reloads: median(reloads.rewritten),
    },
  };
}

/** The longest gap between the turns of a 1 ms timer while `work` runs. */
async function longestGap(work: Promise<unknown>): Promise<number> {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  try {
    await work;
  } finally {
    clearInterval(timer);
  }
  return Math.max(longest, performance.now() - last);
}

/** 2b: the daemon in this process: its event loop's longest pause in a reload, and in a quiet second. */
async function measureGaps(dir: string) {
  const path = `${dir}/in-process.toml`;
  const listen = freePort();
  await Deno.writeTextFile(path, manyRules(ruleCount, listen, 9));
  const loaded = await loadRuleFile(path);
  if (!loaded.ok) throw new Error(loaded.problems.map((p) => p.message).join("; "));
  const daemon = await Daemon.start(loaded, {
    ruleFile: path,
    handleSignals: false,
    overrides: { outputs: [] },
  });
  if (typeof daemon === "number") {
    throw new Error(`the in-process daemon did not start (${daemon})`);
  }
  const during: number[] = [];
  const quiet: number[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      quiet.push(await longestGap(sleep(1_000)));
      await Deno.writeTextFile(path, manyRules(ruleCount, listen, 9, `last-${round}`));
      during.push(await longestGap(daemon.reload()));
      console.error(
        `in process, reload ${round + 1}/${rounds}: longest pause ${
          during.at(-1)!.toFixed(1)
        } ms (a quiet second: ${quiet.at(-1)!.toFixed(1)} ms)`,
      );
    }
  } finally {
    daemon.stop("bench");
    await daemon.done;
  }
  return { during: median(during), quiet: median(quiet) };
}

/** 3: resident memory after `count` full reloads of a `rules`-rule file. */
async function measureReloadMemory(dir: string, rules = 2_000, count = 100) {
  const echo = echoServer();
  const listen = freePort();
  const bouncer = await startPortbounce(dir, manyRules(rules, listen, echo.port), listen);
  try {
    const before = await treeRssKiB(bouncer.pid);
    for (let i = 0; i < count; i++) {
      const from = bouncer.lineCount;
      await Deno.writeTextFile(bouncer.path, manyRules(rules, listen, echo.port, `last-${i}`));
      const reloaded = bouncer.lineAfter(from, /reload: listeners/);
      Deno.kill(bouncer.pid, "SIGHUP");
      await reloaded;
    }
    const after = await treeRssKiB(bouncer.pid);
    console.error(`${count} reloads of ${rules} rules: RSS ${before} KiB -> ${after} KiB`);
    return { rules, count, beforeMiB: before / 1024, afterMiB: after / 1024 };
  } finally {
    await bouncer.stop();
    echo.close();
  }
}

/** The report's rows of a reload storm. */
function stormRows(storm: Awaited<ReturnType<typeof measureStorm>>): string {
  const n = storm.count.toLocaleString("en-US");
  const { unchanged, rewritten } = storm;
  return `| new connections on a ${n}-rule listener, SIGHUP 20 times a second, the file unchanged | ${
    unchanged.rate.toFixed(0)
  } conn/s (${unchanged.ratio.toFixed(2)}× without reloads: ${
    storm.quiet.toFixed(0)
  }); ${unchanged.reloads} reloads in ${seconds} s |
| the same, the file rewritten (a rule renamed) before each SIGHUP | ${
    rewritten.rate.toFixed(0)
  } conn/s (${rewritten.ratio.toFixed(2)}×); ${rewritten.reloads} reloads in ${seconds} s |
`;
}

const dir = await Deno.makeTempDir({ prefix: "portbounce-bench-scale-" });
try {
  const rate = await measureRate(dir);
  const reload = await measureReload(dir);
  const gaps = await measureGaps(dir);
  const memory = await measureReloadMemory(dir);
  const storms = [await measureStorm(dir, ruleCount), await measureStorm(dir, 1_000)];
  const when = new Date().toISOString().slice(0, 16).replace("T", " ");
  const n = ruleCount.toLocaleString("en-US");
  const report = `# Thousands of rules

${when} UTC, \`deno task bench:scale\`: medians of ${rounds} rounds, ${seconds} s per run, on
one machine shared by load generator, bouncer and target (loopback).

| case | measured |
| --- | --- |
| new connection per request, one rule | ${rate.one.toFixed(0)} conn/s |
| the same, ${n} rules on the listener, the match last | ${rate.many.toFixed(0)} conn/s (${
    rate.ratio.toFixed(2)
  }× one rule, median of each round's ratio) |
| a full reload of the ${n}-rule file (SIGHUP until its log line) | ${
    reload.reloadMs.toFixed(0)
  } ms |
| slowest 64-byte round trip while it ran | ${
    reload.worstDuring.toFixed(1)
  } ms (as long without a reload: ${reload.worstQuiet.toFixed(1)} ms) |
| the same reload in this process: the event loop's longest pause | ${
    gaps.during.toFixed(1)
  } ms (a quiet second: ${gaps.quiet.toFixed(1)} ms) |
| resident memory after ${memory.count} full reloads of a ${
    memory.rules.toLocaleString("en-US")
  }-rule file | ${memory.afterMiB.toFixed(0)} MiB (${memory.beforeMiB.toFixed(0)} MiB before them) |
${storms.map(stormRows).join("")}`;
  await Deno.writeTextFile(`${BENCH}results/scale.md`, report);
  console.log(report);
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
