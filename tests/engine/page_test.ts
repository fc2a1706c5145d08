/**
 * The status page's history, as a browser draws it: a rule whose traffic
 * starts mid-window, another that goes quiet, with the clock moved by the
 * test (no waiting). Headless Chromium renders the page; the test reads the
 * pixels of the chart, not the markup. `PORTBOUNCE_SCREENSHOT=docs/status-page.png`
 * refreshes the screenshot in docs/.
 */
import { assert, assertEquals, assertIncludes, assertMatch } from "../assert.ts";
import { startDaemon } from "../harness.ts";
import { echo, exchange, tcpServer } from "../fixtures/net.ts";
import { decodePng } from "../png.ts";
import { chromiumInstalled, chromiumRun } from "../chromium.ts";
import { renderStatusPage } from "../../src/status/page.ts";
import type { RuleReport, StatusReport } from "../../src/status/report.ts";

const chromium = chromiumInstalled;

Deno.test({
  name: "history on the page: traffic that starts mid-window, a rule gone quiet, drawn by Chromium",
  ignore: !chromium,
  async fn() {
    await using target = tcpServer(echo);
    const minute = 60_000;
    const start = Math.floor(Date.now() / minute) * minute - 120 * minute;
    let now = start + 1_000;
    await using bouncer = await startDaemon(
      `[server]\nstatus = "127.0.0.1:0"\nhistory = "2h"\n` +
        `[[rule]]\nname = "www-new"\nlisten = "127.0.0.1:0"\nbounce_to = "127.0.0.1:${target.port}"\nalarm_quiet = "15m"\nlog = []\n` +
        `[[rule]]\nname = "www-old"\nlisten = "127.0.0.2:0"\nbounce_to = "127.0.0.1:${target.port}"\nalarm_quiet = "15m"\nlog = []\n`,
      {
        clock: () => now,
        reverseLookup: (address) =>
          Promise.resolve(address === "127.0.0.1" ? "workstation-7.lab" : null),
      },
    );
    const [fresh, old] = [bouncer.port(0), bouncer.port(1)];
    for (let m = 0; m < 120; m++) {
      now = start + m * minute + 1_000;
      // DNS moves over at minute 60: the new address takes traffic, the old one fades out.
      const newCount = m < 60 ? 0 : Math.min(6, Math.ceil((m - 59) / 8));
      const oldCount = m < 70 ? Math.max(1, 4 - Math.floor(m / 20)) : 0;
      for (let i = 0; i < newCount; i++) await exchange(fresh, "x");
      for (let i = 0; i < oldCount; i++) await exchange(old, "x", "127.0.0.2");
      bouncer.daemon.engine.monitor.tick();
    }
    now = start + 120 * minute + 1_000;
    bouncer.daemon.engine.monitor.tick();
    const quiet = await bouncer.log.waitFor({ alarm: "quiet", rule: "www-old" });
    assertMatch(quiet.message!, /^rule www-old is quiet: no new session for \d+m\b/);
    const first = await bouncer.log.waitFor({ alarm: "first-traffic", rule: "www-new" });
    // A line with `event` and `client` fields would be rendered as a session event.
    assertEquals(first.event, undefined);
    assertMatch(
      first.message!,
      /^first traffic for rule www-new: 127\.0\.0\.1:\d+ at \d{4}-\d\d-\d\dT/,
    );

    const status = bouncer.daemon.status.address!;
    const json = await fetch(`http://${status}/status.json?history=120`).then((r) => r.json());
    const history = json.rules.find((r: { name: string }) => r.name === "www-new").history;
    // 120 closed minutes, then the minute under way.
    assertEquals(history.length, 121);
    assertEquals(history.at(-1).partial, true);
    assertEquals(history.slice(0, 60).every((b: { sessions: number }) => b.sessions === 0), true);
    assert(history.slice(60, 120).every((b: { sessions: number }) => b.sessions > 0));
    assertEquals(json.alarms.active, [{ rule: "www-old", kind: "quiet" }]);
    const all = await fetch(`http://${status}/history.json`).then((r) => r.json());
    assertEquals(all.minutes, 120);
    assertEquals(all.rules.map((r: { name: string }) => r.name), ["www-new", "www-old"]);

    await using dir = await Deno.makeTempDir({ prefix: "portbounce-page-" }).then((path) =>
      Object.assign(path, {
        [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
      })
    );
    // Client names come from a background lookup: wait for it before the screenshot.
    for (let i = 0; i < 100; i++) {
      const known = await fetch(`http://${status}/clients.json`).then((r) => r.json());
      if (known.rules[0].clients[0]?.name === "workstation-7.lab") break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const shot = `${dir}/page.png`;
    await chromiumRun([
      "--hide-scrollbars",
      `--screenshot=${shot}`,
      // Tall enough for the clients of each rule below the tables (the screenshot in docs/).
      "--window-size=1280,1300",
      `http://${status}/`,
    ]);
    const image = decodePng(await Deno.readFile(shot));
    const near = (x: number, y: number, rgb: number, tolerance = 48) => {
      const [r, g, b] = image.pixel(x, y);
      return Math.abs(r - (rgb >> 16)) < tolerance &&
        Math.abs(g - ((rgb >> 8) & 255)) < tolerance && Math.abs(b - (rgb & 255)) < tolerance;
    };
    const background = (x: number, y: number) => near(x, y, 0xf4f6f8, 3);
    // The chart: the first band of rows with a long run of its background (#f4f6f8).
    const wide = (y: number) => {
      let run = 0;
      for (let x = 0; x < image.width; x++) {
        run = background(x, y) ? run + 1 : 0;
        if (run > 500) return true;
      }
      return false;
    };
    let top = 0;
    while (top < image.height && !wide(top)) top++;
    // Lines crossing it break some rows: the band ends at the last wide row close below.
    let bottom = top;
    for (let y = top; y < Math.min(image.height, top + 250); y++) if (wide(y)) bottom = y + 1;
    assert(bottom - top > 100, `no chart found (rows ${top}-${bottom})`);
    let left = 0;
    while (!background(left, top + 2)) left++;
    let right = left;
    while (right < image.width && background(right, top + 2)) right++;
    // Where each rule's line rises above the baseline, as a share of the chart's width.
    const raised = (rgb: number) => {
      const xs: number[] = [];
      for (let x = left; x < right; x++) {
        for (let y = top; y < bottom - 4; y++) {
          if (near(x, y, rgb)) {
            xs.push((x - left) / (right - left));
            break;
          }
        }
      }
      return xs;
    };
    const fresh_ = raised(0x1f5fa8); // www-new, the first colour.
    const old_ = raised(0xb35900); // www-old, the second.
    assert(fresh_.length > 0 && old_.length > 0, "both lines drawn");
    // Nothing of www-new in the first half; it shows from minute 60 (where www-old's line, drawn
    // over it, leaves it by minute 70).
    assert(
      Math.min(...fresh_) > 0.45 && Math.min(...fresh_) < 0.62,
      `www-new rises at ${Math.min(...fresh_)}`,
    );
    assert(
      Math.min(...old_) < 0.05 && Math.max(...old_) < 0.75,
      `www-old: ${Math.min(...old_)}-${Math.max(...old_)}`,
    );
    const page = await fetch(`http://${status}/`).then((r) => r.text());
    assertIncludes(page, '<line class="first"');
    assertIncludes(page, "Gone quiet: <b>www-old</b>");
    // Who used each rule in the last 24 hours, the last one first, the list behind it.
    assertMatch(
      page,
      /<details data-rule="www-old" open><summary><b>www-old<\/b>: 1 client in the last 24h, last: workstation-7\.lab \(127\.0\.0\.1\) 51m ago<\/summary>/,
    );
    assertIncludes(page, "<tr><td>127.0.0.1</td>");
    const screenshot = Deno.env.get("PORTBOUNCE_SCREENSHOT");
    if (screenshot) await Deno.copyFile(shot, screenshot);
  },
});

Deno.test({
  name: "the page fits 1,280 and 1,400 pixels: no column of the rules table is cut off",
  ignore: !chromium,
  async fn() {
    await using dir = await Deno.makeTempDir({ prefix: "portbounce-layout-" }).then((path) =>
      Object.assign(path, {
        [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
      })
    );
    const page = renderStatusPage(busyReport());
    // Each table's width against its scrolling box's, once laid out.
    const measure = `<script>addEventListener("load", () => {
  const parts = [...document.querySelectorAll("table")].map((t) =>
    t.id + ":" + t.scrollWidth + ":" + t.parentElement.clientWidth);
  document.body.dataset.measure = parts.join(" ");
});</script>`;
    const file = `${dir}/page.html`;
    await Deno.writeTextFile(
      file,
      page.replace(/<meta http-equiv="refresh"[^>]*>/, "").replace("</body>", `${measure}</body>`),
    );
    for (const width of [1280, 1400]) {
      const dom = await chromiumRun([
        "--dump-dom",
        "--virtual-time-budget=2000",
        `--window-size=${width},900`,
        `file://${file}`,
      ]);
      const measured = /data-measure="([^"]*)"/.exec(dom)?.[1];
      assert(measured, `no measurement at ${width}px`);
      for (const part of measured.split(" ")) {
        const [id, table, box] = part.split(":");
        // Before: at 1,280 px the rules table was 1,4xx px wide in a 1,2xx px box.
        assert(Number(table) <= Number(box), `${width}px: table ${id} is ${table}px in ${box}px`);
      }
    }
  },
});

/** A report with what makes the rules table wide: long names, lists, IPv6, errors, big numbers. */
function busyReport(): StatusReport {
  const now = Date.parse("2026-12-06T05:00:30Z");
  const iso = (ms: number) => new Date(now - ms).toISOString();
  const history = Array.from({ length: 60 }, (_, i) => ({
    minute: now - (60 - i) * 60_000,
    sessions: (i * 7) % 23,
    clients: 3,
    bytes_up: 1000,
    bytes_down: 9000,
    errors: 0,
    blocked: 0,
  }));
  const rule = (name: string, i: number): RuleReport => ({
    name,
    index: i,
    action: "pass",
    protocols: ["tcp", "udp"],
    listen: ["[2001:db8:4006:812::200e]:443", "203.0.113.10:443", "203.0.113.11:8443"],
    target: "198.51.100.20:443, 198.51.100.21:443",
    state: "in force",
    // The widest a rule's name cell gets: with the end of a temporary rule under it.
    expires: "2026-12-31T18:00:00.000Z",
    quiet_after_s: 300,
    idle: 3,
    targets: ["198.51.100.20:443", "198.51.100.21:443"].map((target, t) => ({
      target,
      up: t === 0,
      since: iso(60_000),
      failures: t * 3,
      last_error: t === 0 ? null : "connection refused (no listener at the old address)",
      checked: true,
      active: 120,
      total: 61_728,
      errors: t,
      bytes_up: 6_172_839_450,
      bytes_down: 49_382_716_050,
    })),
    history,
    clients_1m: 1_234,
    clients_15m: 12_345,
    clients_60m: 123_456,
    active: 240,
    total: 123_456,
    blocked: { rule: 12_345 },
    errors: 1_234,
    dropped: {},
    bytes_up: 12_345_678_901,
    bytes_down: 98_765_432_101,
    first_session: iso(3_600_000),
    last_session: iso(2_000),
    last_client: "[2001:db8:ffff:1234:5678:9abc:def0:1234]:51234",
  });
  const rules = ["www-frontend-new-address", "imap-mail-store", "dns"].map(rule);
  return {
    version: "0.1.0",
    source: "/etc/portbounce/portbounce.toml",
    started: iso(86_400_000),
    now: new Date(now).toISOString(),
    uptime_s: 86_400,
    totals: { ...rules[0], active: 720, total: 370_368 },
    rules,
    listeners: rules[0].listen.map((listen) => ({
      key: `tcp ${listen}`,
      protocol: "tcp" as const,
      bound: listen,
      error: null,
      rules: rules.map((r) => r.name),
      ...rules[0],
    })),
    log: { lines_failed: 0, lines_dropped: 0, last_error: null },
    buffers: { budget_bytes: 1 << 26, in_use_bytes: 0, refused: 0 },
    alarms: { active: [], recent: [], counts: [] },
    history_minutes: 60,
    last_reload: null,
  };
}
