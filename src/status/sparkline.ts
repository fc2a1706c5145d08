/**
 * Small pictures of traffic over time: a line of Unicode blocks for the
 * terminal, and inline SVG for the status page (a sparkline per rule, one
 * chart of all rules). No scripts, no external assets. Pure.
 *
 * @module
 */

const BLOCKS = "▁▂▃▄▅▆▇█";

/** One character per value: a space for nothing, then eight heights. */
export function unicodeSparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) =>
    v <= 0 || max === 0 ? " " : BLOCKS[Math.min(7, Math.floor((v / max) * 7.999))]
  ).join("");
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/**
 * Points of a polyline through `values` in a `width` x `height` box (0 at the
 * bottom). A point between two of the same height draws nothing: left out, so
 * a day of quiet minutes is two points, not 1,440, and the page stays small.
 */
function points(
  values: readonly number[],
  width: number,
  height: number,
  max: number,
  /** How many values the width holds (more than `values` when the last ones are drawn apart). */
  slots = values.length,
  /** The index of the first value, within those slots. */
  first = 0,
): string {
  const step = slots > 1 ? width / (slots - 1) : width;
  const y = (v: number) => (height - (max > 0 ? (v / max) * (height - 2) : 0) - 1).toFixed(1);
  const kept: string[] = [];
  for (let i = 0; i < values.length; i++) {
    const inner = i > 0 && i < values.length - 1;
    if (inner && values[i - 1] === values[i] && values[i + 1] === values[i]) continue;
    kept.push(`${((first + i) * step).toFixed(1)},${y(values[i])}`);
  }
  return kept.join(" ");
}

/**
 * The polylines of a series: closed minutes solid; the minute under way
 * (`partial`: the last value), which holds only its first seconds, dashed,
 * so that it does not read as a fall.
 */
function lines(
  values: readonly number[],
  partial: boolean,
  width: number,
  height: number,
  max: number,
  attributes: string,
): string {
  if (!partial || values.length < 2) {
    return `<polyline ${attributes} points="${points(values, width, height, max)}"/>`;
  }
  const n = values.length;
  const closed = points(values.slice(0, -1), width, height, max, n);
  const under = points(values.slice(-2), width, height, max, n, n - 2);
  return `<polyline ${attributes} points="${closed}"/>` +
    `<polyline ${attributes} class="partial" stroke-dasharray="3 3" points="${under}"/>`;
}

/**
 * A sparkline of new sessions per minute, with the first minute that had
 * traffic marked (index, or null), labelled for screen readers.
 */
export function svgSparkline(
  values: readonly number[],
  label: string,
  firstTraffic: number | null,
  width = 240,
  height = 32,
  /** Whether the last value is the minute under way. */
  partial = false,
): string {
  const max = Math.max(0, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const marker = firstTraffic === null
    ? ""
    : `<line class="first" x1="${(firstTraffic * step).toFixed(1)}" x2="${
      (firstTraffic * step).toFixed(1)
    }" y1="0" y2="${height}" stroke="#16702e" stroke-dasharray="2 2"/>`;
  return `<svg class="spark" role="img" aria-label="${
    escape(label)
  }" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" preserveAspectRatio="none">` +
    `<rect width="${width}" height="${height}" fill="#f4f6f8"/>${marker}` +
    lines(values, partial, width, height, max, `fill="none" stroke="#4a4a4a" stroke-width="1.5"`) +
    `<title>${escape(label)}: at most ${max} new sessions a minute</title></svg>`;
}

const COLOURS = [
  "#1f5fa8",
  "#b35900",
  "#16702e",
  "#8a3b9e",
  "#b00020",
  "#00707a",
  "#6b6b00",
  "#444",
];

/** "05:01", or "12-05 05:01" when `withDate`: UTC. */
function clock(ms: number, withDate: boolean): string {
  const iso = new Date(ms).toISOString();
  return withDate ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 16);
}

/**
 * One chart of every rule's new sessions per minute, with a legend, the peak
 * and the time range (from the first minute's start to the last one's end,
 * with dates when they differ). Text stays out of the stretched drawing.
 */
export function svgChart(
  series: readonly { readonly name: string; readonly values: readonly number[] }[],
  minutes: readonly number[],
  width = 720,
  height = 160,
  /** Whether the last minute is the one under way. */
  partial = false,
): string {
  const peak = Math.max(0, ...series.flatMap((s) => s.values));
  const max = Math.max(1, peak);
  const drawn = series.map((s, i) =>
    lines(
      s.values,
      partial,
      width,
      height,
      max,
      `data-rule="${escape(s.name)}" fill="none" stroke="${
        COLOURS[i % COLOURS.length]
      }" stroke-width="1.5"`,
    )
  ).join("");
  const legend = series.map((s, i) =>
    `<span class="key"><span style="background:${COLOURS[i % COLOURS.length]}"></span>${
      escape(s.name)
    }</span>`
  ).join(" ");
  let range = "";
  if (minutes.length > 0) {
    const from = minutes[0];
    const to = minutes[minutes.length - 1] + 60_000;
    const days = new Date(from).toISOString().slice(0, 10) !==
      new Date(to - 1).toISOString().slice(0, 10);
    range = `${clock(from, days)} – ${clock(to, days)} UTC`;
  }
  return `<figure class="chart"><svg role="img" aria-label="new sessions per minute, every rule" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" width="100%" height="${height}">` +
    `<rect width="${width}" height="${height}" fill="#f4f6f8"/>${drawn}</svg>` +
    `<figcaption>${legend} <span class="axis">${range}; peak ${peak} new sessions/min</span></figcaption></figure>`;
}
