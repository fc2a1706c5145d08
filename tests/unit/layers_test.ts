/**
 * The module graph of src/: every import goes to the same layer or a lower
 * one, and no module reaches itself again through its imports. Read from the
 * source text (static, type-only and dynamic imports, and worker URLs), so it
 * runs without a network or a type check.
 */
import { assertEquals } from "../assert.ts";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/**
 * Lowest first. The pure ground floor (what a rule file says), the relay
 * engine's parts, what it reports, the runtime core, the isolates that share
 * it, the process shell, the commands.
 */
const LAYERS: readonly (readonly string[])[] = [
  ["src/version.ts", "src/config"],
  ["src/rules"],
  ["src/relay"],
  ["src/log", "src/status"],
  ["src/server"],
  ["src/workers"],
  ["src/daemon"],
  ["src/export", "src/barefoot", "src/cli"],
  ["main.ts"],
];

function layerOf(path: string): number {
  const index = LAYERS.findIndex((layer) =>
    layer.some((place) => path === place || path.startsWith(`${place}/`))
  );
  if (index < 0) throw new Error(`${path} is in no layer: add its folder to LAYERS`);
  return index;
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)"(\.\.?\/[^"]+\.ts)"/g;

async function sources(): Promise<string[]> {
  const found = ["main.ts"];
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(join(ROOT, dir))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (path.endsWith(".ts")) found.push(path);
    }
  };
  await walk("src");
  return found.sort();
}

/** Each module of src/ (and main.ts) with the modules it imports, as paths from the root. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const path of await sources()) {
    const text = await Deno.readTextFile(join(ROOT, path));
    const imported = [...text.matchAll(IMPORT)].map((match) =>
      relative(ROOT, resolve(join(ROOT, dirname(path)), match[1]))
    );
    graph.set(path, [...new Set(imported)]);
  }
  return graph;
}

Deno.test("layers: no module imports from a layer above its own", async () => {
  const upward: string[] = [];
  for (const [from, imports] of await importGraph()) {
    for (const to of imports) {
      if (layerOf(to) > layerOf(from)) upward.push(`${from} -> ${to}`);
    }
  }
  assertEquals(upward, []);
});

Deno.test("layers: the module graph has no cycle", async () => {
  const graph = await importGraph();
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const trail: string[] = [];
  const visit = (module: string): void => {
    state.set(module, "open");
    trail.push(module);
    for (const next of graph.get(module) ?? []) {
      if (state.get(next) === "open") {
        cycles.push([...trail.slice(trail.indexOf(next)), next].join(" -> "));
      } else if (!state.has(next)) visit(next);
    }
    trail.pop();
    state.set(module, "done");
  };
  for (const module of graph.keys()) if (!state.has(module)) visit(module);
  assertEquals(cycles, []);
});

Deno.test("layers: the graph is read (every import resolves to a file)", async () => {
  const graph = await importGraph();
  const missing = [...graph.values()].flat().filter((path) => !graph.has(path));
  assertEquals(missing, []);
  // The reader sees the imports it must: the daemon imports the engine, a worker its host.
  assertEquals(graph.get("src/daemon/daemon.ts")?.includes("src/server/engine.ts"), true);
  assertEquals(graph.get("src/workers/worker.ts")?.includes("src/workers/worker_host.ts"), true);
});
