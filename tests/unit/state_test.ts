/**
 * The state file's text: what is kept reads back the same, and every way a
 * file can be damaged is named rather than half read.
 */
import { assert, assertEquals } from "../assert.ts";
import {
  decodeState,
  encodeState,
  looksLikeState,
  type SavedState,
} from "../../src/status/state.ts";
import { getLogger } from "@logtape/logtape";
import { Stats } from "../../src/status/stats.ts";
import { Monitor } from "../../src/server/monitor.ts";
import { restoreState } from "../../src/daemon/state_store.ts";
import { EventGate } from "../../src/log/rate_limit.ts";
import { loadRules } from "../fixtures/rules.ts";

const T0 = Date.UTC(2026, 11, 6, 9, 0);

const STATE: SavedState = {
  written: T0 + 61_000,
  rules: {
    web: {
      firstSession: T0,
      firstClient: "198.51.100.7:50690",
      lastSession: T0 + 60_000,
      lastClient: "198.51.100.8:40000",
      evicted: 3,
      clients: [{
        address: "198.51.100.7",
        via: "203.0.113.10:80",
        firstSeen: T0,
        lastSeen: T0 + 30_000,
        sessions: 4,
        refused: 1,
        bytesUp: 100,
        bytesDown: 5_000,
        active: 0,
      }],
    },
  },
  history: {
    "rule:web": [{
      minute: T0,
      sessions: 4,
      clients: 1,
      bytes_up: 100,
      bytes_down: 5_000,
      errors: 0,
      blocked: 1,
    }],
  },
};

Deno.test("state: what is kept reads back the same, and is known for what it is", () => {
  const text = encodeState(STATE);
  assert(looksLikeState(text));
  assertEquals(decodeState(text), STATE);
  assertEquals(looksLikeState("root:x:0:0:root:/root:/bin/bash\n"), false);
  assertEquals(looksLikeState('{"rules": {}}'), false);
});

Deno.test("state: a truncated, other-version or half-written file is named damaged, never half read", () => {
  const text = encodeState(STATE);
  const damaged = (t: string) => {
    const decoded = decodeState(t);
    return "damaged" in decoded ? decoded.damaged : "read";
  };
  assert(damaged(text.slice(0, text.length / 2)).startsWith("not whole JSON"));
  assertEquals(
    damaged(text.replace('"portbounce_state":1', '"portbounce_state":2')),
    "version 2, this portbounce reads 1",
  );
  assertEquals(
    damaged(text.replace('"198.51.100.7","203.0.113.10:80"', '"198.51.100.7"')),
    'a client of rule "web" is not whole',
  );
  assertEquals(
    damaged(text.replace('"sessions":4,"clients"', '"sessions":-4,"clients"')),
    'the history of "rule:web" is not whole',
  );
  assertEquals(damaged('{"portbounce_state":1,"rules":{},"history":{}}'), "no time it was written");
  assertEquals(damaged("[1, 2]"), "not a JSON object");
});

Deno.test("state: values no clock reaches, and text that would reach a terminal raw, are damage", () => {
  const text = encodeState(STATE);
  const damaged = (t: string) => "damaged" in decodeState(t);
  assert(damaged(text.replace(`${T0 + 30_000}`, "1e17")));
  assert(damaged(text.replace('"198.51.100.7","203.0.113.10:80"', '"\\u001b]0;pwned\\u0007","x"')));
  assert(damaged(text.replace('"198.51.100.7","203.0.113.10:80"', '"not-an-address","x"')));
  assert(damaged(text.replace(`"minute":${T0}`, `"minute":${T0 + 1}`)));
  // A first session no clock reaches is dropped, not kept to break every page later.
  const far = decodeState(text.replace(`"first_session":${T0}`, '"first_session":1e300'));
  assert(!("damaged" in far));
  assertEquals(far.rules.web.firstSession, null);
});

Deno.test("state: a rule named like an Object property finds nothing of Object's", () => {
  const stats = new Stats();
  const monitor = new Monitor(getLogger(["test"]), stats, 3_600_000, new EventGate());
  const config = loadRules(
    `[[rule]]\nname = "constructor"\nlisten = "127.0.0.1:1"\nbounce_to = "127.0.0.1:2"\n` +
      `[[rule]]\nname = "web"\nlisten = "127.0.0.1:3"\nbounce_to = "127.0.0.1:4"\n`,
  );
  restoreState(
    decodeState(encodeState(STATE)) as SavedState,
    stats,
    monitor,
    config.rules,
    [],
  );
  assertEquals(stats.rules.get("web")!.clients!.list().map((c) => c.address), ["198.51.100.7"]);
  assertEquals(stats.rules.has("constructor"), false);
});
