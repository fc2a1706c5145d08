/**
 * Benchmark output: markdown tables (medians, ratios to haproxy and to
 * direct), JSON, and an SVG bar chart of the ratios.
 *
 * @module
 */
import { median } from "./measure.ts";
import type { Workload } from "./workloads.ts";

/** Samples per workload id, per bouncer name ("direct" included). */
export type Samples = Record<string, Record<string, number[]>>;

/** What the run was. */
export interface RunInfo {
  readonly date: string;
  readonly machine: string;
  readonly versions: Readonly<Record<string, string>>;
  readonly rounds: number;
  readonly seconds: number;
  readonly notes: readonly string[];
}

/** A workload as reported, including the start-latency pseudo-workload. */
export type ReportedWorkload =
  & Pick<Workload, "id" | "title" | "unit" | "higherIsBetter">
  & Partial<Pick<Workload, "protocol">>;

/** The peer a workload's ratios are taken against: haproxy for TCP, socat for UDP (haproxy has none). */
export function referencePeer(workload: ReportedWorkload): string {
  return workload.protocol === "udp" ? "socat" : "haproxy";
}

function format(value: number): string {
  if (value >= 1000) return Math.round(value).toLocaleString("en-US");
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** Median of a workload for a bouncer, or undefined when not measured. */
export function medianOf(samples: Samples, workload: string, bouncer: string): number | undefined {
  const values = samples[workload]?.[bouncer];
  return values && values.length > 0 ? median(values) : undefined;
}

/** Lowest and highest sample of a workload for a bouncer, or undefined when not measured. */
export function spreadOf(
  samples: Samples,
  workload: string,
  bouncer: string,
): [number, number] | undefined {
  const values = samples[workload]?.[bouncer];
  return values && values.length > 0 ? [Math.min(...values), Math.max(...values)] : undefined;
}

/**
 * Whether two bouncers' rounds do not overlap (every round of one above
 * every round of the other): a difference beyond the spread. Needs two
 * rounds of each; one round says nothing of the spread.
 */
export function apart(samples: Samples, workload: string, a: string, b: string): boolean {
  const [x, y] = [samples[workload]?.[a] ?? [], samples[workload]?.[b] ?? []];
  if (x.length < 2 || y.length < 2) return false;
  return Math.min(...x) > Math.max(...y) || Math.max(...x) < Math.min(...y);
}

/** `value / reference` oriented so that above 1 is better than the reference. */
export function ratio(value: number, reference: number, higherIsBetter: boolean): number {
  return higherIsBetter ? value / reference : reference / value;
}

function table(header: string[], rows: string[][]): string {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => i < 2 ? "---" : "---:").join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ].join("\n");
}

/** The markdown report. */
export function renderMarkdown(
  info: RunInfo,
  workloads: readonly ReportedWorkload[],
  bouncers: readonly string[],
  samples: Samples,
  floors: Readonly<Record<string, string>> = {},
): string {
  const columns = ["direct", ...bouncers];
  const medians = workloads.map((w) => [
    w.title,
    w.unit,
    ...columns.map((b) => {
      const m = medianOf(samples, w.id, b);
      return m === undefined ? "–" : format(m);
    }),
  ]);
  const spreads = workloads.map((w) => [
    w.title,
    w.unit,
    ...columns.map((b) => {
      const spread = spreadOf(samples, w.id, b);
      return spread === undefined ? "–" : `${format(spread[0])}–${format(spread[1])}`;
    }),
  ]);
  const ratios = (referenceOf: (w: ReportedWorkload) => string, showReference: boolean) =>
    workloads.map((w) => {
      const reference = referenceOf(w);
      const ref = medianOf(samples, w.id, reference);
      return [
        w.title,
        ...(showReference ? [reference] : []),
        w.higherIsBetter ? "higher" : "lower",
        ...bouncers.map((b) => {
          const m = medianOf(samples, w.id, b);
          return m === undefined || ref === undefined || m === 0
            ? "–"
            : `${ratio(m, ref, w.higherIsBetter).toFixed(2)}×${
              b !== reference && apart(samples, w.id, b, reference) ? "*" : ""
            }`;
        }),
      ];
    });
  // portbounce against the smallest correct relay the same runtime can run.
  const floorPairs = Object.entries(floors).filter(([b, f]) =>
    bouncers.includes(b) && bouncers.includes(f)
  );
  const floorRows = workloads.flatMap((w) => {
    const cells = floorPairs.map(([b, f]) => {
      const m = medianOf(samples, w.id, b);
      const ref = medianOf(samples, w.id, f);
      return m === undefined || ref === undefined || m === 0
        ? undefined
        : `${ratio(m, ref, w.higherIsBetter).toFixed(2)}×`;
    });
    return cells.some((c) => c !== undefined)
      ? [[w.title, w.higherIsBetter ? "higher" : "lower", ...cells.map((c) => c ?? "–")]]
      : [];
  });
  const floorSection = floorRows.length === 0 ? "" : `
## Ratio to Deno's floor (the smallest correct relay on the same runtime; 1 is the floor)

${table(["workload", "better is", ...floorPairs.map(([b, f]) => `${b} / ${f}`)], floorRows)}
`;
  return `# Benchmark results

${info.date} on ${info.machine}. Medians of ${info.rounds} interleaved rounds (every bouncer once per
round, in rotating order), ${info.seconds} s per timed run, all on loopback of one machine: load
generator, bouncer and target share the cores, so compare ratios, not absolute numbers.

Versions: ${Object.entries(info.versions).map(([k, v]) => `${k} ${v}`).join("; ")}.

## Medians

${table(["workload", "unit", ...columns], medians)}

## Ratio to the reference peer (above 1: better than it)

haproxy for TCP; socat for UDP, which haproxy does not relay. Here and below, a \`*\` marks
a difference beyond the spread: every round of that bouncer was above, or every one below, every
round of the reference (\`Spread\` lists them). Without it, the rounds overlap and the ratio may be
noise.

${table(["workload", "reference", "better is", ...bouncers], ratios(referencePeer, true))}

## Ratio to direct, no bouncer (the physical limit is 1)

${table(["workload", "better is", ...bouncers], ratios(() => "direct", false))}
${floorSection}
## Spread: the lowest and highest round

${table(["workload", "unit", ...columns], spreads)}

${info.notes.map((note) => `- ${note}`).join("\n")}
`;
}

const COLORS: Record<string, string> = {
  portbounce: "#1b7f3b",
  "portbounce-2w": "#5fb87a",
  haproxy: "#3b6fb6",
  nginx: "#8a5cc2",
  rinetd: "#c77c0e",
  redir: "#b23b3b",
  socat: "#6b6b6b",
};

/**
 * A grouped bar chart: per workload, each bouncer's result relative to the
 * best bouncer of that workload (1.0 = best; direct is left out).
 */
export function renderSvg(
  workloads: readonly ReportedWorkload[],
  bouncers: readonly string[],
  samples: Samples,
): string {
  const rows = workloads.map((w) => {
    const values = bouncers.map((b) => medianOf(samples, w.id, b));
    const present = values.filter((v): v is number => v !== undefined && v > 0);
    const best = w.higherIsBetter ? Math.max(...present) : Math.min(...present);
    return {
      w,
      scores: values.map((v) =>
        v === undefined || v <= 0 ? undefined : ratio(v, best, w.higherIsBetter)
      ),
    };
  });
  const barHeight = 12;
  const groupHeight = bouncers.length * barHeight + 18;
  const left = 330;
  const width = 820;
  const plot = width - left - 60;
  const height = 60 + rows.length * groupHeight + 30;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">portbounce and peers: result relative to the best bouncer per workload (1.0 = best)</text>`,
  ];
  bouncers.forEach((b, i) => {
    parts.push(
      `<rect x="${10 + i * 110}" y="32" width="10" height="10" fill="${COLORS[b] ?? "#999"}"/>`,
      `<text x="${24 + i * 110}" y="41">${b}</text>`,
    );
  });
  rows.forEach(({ w, scores }, g) => {
    const top = 60 + g * groupHeight;
    parts.push(`<text x="10" y="${top + 12}">${escapeXml(w.title)}</text>`);
    scores.forEach((score, i) => {
      const y = top + 4 + i * barHeight;
      if (score === undefined) {
        parts.push(
          `<text x="${left}" y="${y + 9}" fill="#999">${bouncers[i]}: not measured</text>`,
        );
        return;
      }
      parts.push(
        `<rect x="${left}" y="${y}" width="${(score * plot).toFixed(1)}" height="${
          barHeight - 2
        }" fill="${COLORS[bouncers[i]] ?? "#999"}"/>`,
        `<text x="${left + score * plot + 4}" y="${y + 9}">${score.toFixed(2)}</text>`,
      );
    });
  });
  parts.push(
    `<line x1="${left + plot}" y1="50" x2="${left + plot}" y2="${
      height - 20
    }" stroke="#aaa" stroke-dasharray="3,3"/>`,
    "</svg>",
  );
  return parts.join("\n") + "\n";
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
