/**
 * Measuring helpers: ports, readiness, process memory, command output, medians.
 *
 * @module
 */

/** A free TCP and UDP port on 127.0.0.1 (bound and released; good enough on a quiet box). */
export function freePort(): number {
  for (;;) {
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = tcp.addr.port;
    try {
      Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // UDP side taken: try another.
    } finally {
      tcp.close();
    }
  }
}

/** Waits until a TCP port accepts; returns the milliseconds waited. */
export async function waitForTcp(port: number, timeoutMs = 20_000): Promise<number> {
  const started = performance.now();
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return performance.now() - started;
    } catch {
      if (performance.now() - started > timeoutMs) throw new Error(`nothing listens on ${port}`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
}

/**
 * Waits until something LISTENs on TCP `port` (read from /proc/net/tcp*), without
 * connecting: a probe connection would be relayed to the target as a session.
 * Returns the milliseconds waited.
 */
export async function waitForListen(port: number, timeoutMs = 20_000): Promise<number> {
  const started = performance.now();
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  for (;;) {
    for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      const text = await Deno.readTextFile(table).catch(() => "");
      for (const line of text.split("\n").slice(1)) {
        const fields = line.trim().split(/\s+/);
        if (fields[1]?.endsWith(`:${hex}`) && fields[3] === "0A") {
          return performance.now() - started;
        }
      }
    }
    if (performance.now() - started > timeoutMs) throw new Error(`nothing listens on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** `pid` and every process descending from it. */
export async function processTree(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parents.set(Number(entry.name), ppid);
    } catch {
      // Gone meanwhile.
    }
  }
  const tree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [child, parent] of parents) {
      if (tree.has(parent) && !tree.has(child)) {
        tree.add(child);
        grew = true;
      }
    }
  }
  return [...tree];
}

/** Resident memory (KiB) of `pid` and every process descending from it. */
export async function treeRssKiB(pid: number): Promise<number> {
  let total = 0;
  for (const member of await processTree(pid)) {
    try {
      const status = await Deno.readTextFile(`/proc/${member}/status`);
      total += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/** Runs a command to completion; returns stdout, failing with stderr on a non-zero exit. */
export async function output(command: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const stdout = new TextDecoder().decode(result.stdout);
  if (!result.success) {
    throw new Error(
      `${command} ${args.join(" ")}: ${new TextDecoder().decode(result.stderr)}${stdout}`,
    );
  }
  return stdout;
}

/** The median of some numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until a child prints a line starting with `prefix` on stdout; returns the line. */
export async function waitForLine(
  child: Deno.ChildProcess,
  prefix: string,
  timeoutMs = 120_000,
): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const deadline = setTimeout(() => reader.cancel(), timeoutMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`no "${prefix}" line (exited or timed out)`);
      buffered += value;
      const line = buffered.split("\n").find((l) => l.startsWith(prefix));
      if (line !== undefined) return line;
    }
  } finally {
    clearTimeout(deadline);
    reader.releaseLock();
  }
}
