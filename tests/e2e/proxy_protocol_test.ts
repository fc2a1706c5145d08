/**
 * PROXY protocol toward the target, read by real consumers (nginx's
 * `listen ... proxy_protocol` and haproxy's `accept-proxy`) and by a raw
 * reader that checks every byte of both versions, IPv4 and IPv6.
 */
import ipaddr from "ipaddr.js";
import { assert, assertEquals } from "../assert.ts";
import { passRule } from "../fixtures/rules.ts";
import { delay, freePortRange, readAll, startBouncer, tempDir, writeAll } from "./helpers.ts";

async function has(command: string): Promise<boolean> {
  return await new Deno.Command(command, { args: ["-v"], stdout: "null", stderr: "null" })
    .output().then(() => true, () => false);
}

/** An HTTP GET through `port` from `hostname`; resolves to the body and our own address. */
async function get(port: number, hostname = "127.0.0.1") {
  const conn = await Deno.connect({ hostname, port });
  const local = conn.localAddr;
  await writeAll(conn, new TextEncoder().encode(`GET / HTTP/1.0\r\nHost: test\r\n\r\n`));
  const answer = new TextDecoder().decode(await readAll(conn));
  conn.close();
  return { body: answer.split("\r\n\r\n")[1] ?? "", local: `${local.hostname}:${local.port}` };
}

/** Reads a PROXY header the long way, independent of the code under test. */
function parseHeader(bytes: Uint8Array): string {
  const signature = [13, 10, 13, 10, 0, 13, 10, 81, 85, 73, 84, 10];
  if (signature.every((b, i) => bytes[i] === b)) {
    assertEquals(bytes[12], 0x21, "version 2, PROXY");
    const length = bytes[14] * 256 + bytes[15];
    const family = bytes[13];
    const body = bytes.subarray(16, 16 + length);
    if (family === 0x11) {
      assertEquals(length, 12);
      const ip = (at: number) => [...body.subarray(at, at + 4)].join(".");
      return `v2 ${ip(0)}:${body[8] * 256 + body[9]} -> ${ip(4)}:${body[10] * 256 + body[11]}`;
    }
    assertEquals(family, 0x21, "IPv6 over a stream");
    assertEquals(length, 36);
    const ip = (at: number) => ipaddr.fromByteArray([...body.subarray(at, at + 16)]).toString();
    return `v2 [${ip(0)}]:${body[32] * 256 + body[33]} -> [${ip(16)}]:${body[34] * 256 + body[35]}`;
  }
  const line = new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(10) + 1));
  const m = /^PROXY (TCP4|TCP6) (\S+) (\S+) (\d+) (\d+)\r\n$/.exec(line);
  assert(m, JSON.stringify(line));
  return m[1] === "TCP4"
    ? `v1 ${m[2]}:${m[4]} -> ${m[3]}:${m[5]}`
    : `v1 [${m[2]}]:${m[4]} -> [${m[3]}]:${m[5]}`;
}

/** Waits (up to 2.5 s) until a peer started by the test accepts on `port`. */
async function untilListening(port: number): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
    if (conn) return conn.close();
    await delay(50);
  }
}

Deno.test("PROXY v1 and v2, IPv4 and IPv6: every byte as the protocol says, then the client's data", async () => {
  for (const family of [4, 6] as const) {
    const host = family === 4 ? "127.0.0.1" : "::1";
    for (const version of ["v1", "v2"]) {
      const seen = Promise.withResolvers<Uint8Array>();
      const listener = Deno.listen({ hostname: host, port: 0 });
      const serving = (async () => {
        const conn = await listener.accept();
        seen.resolve(await readAll(conn));
        conn.close();
      })();
      try {
        await using bouncer = await startBouncer(
          passRule({
            listen: family === 4 ? "127.0.0.1:0" : "[::1]:0",
            target: family === 4
              ? `127.0.0.1:${listener.addr.port}`
              : `[::1]:${listener.addr.port}`,
            extra: `proxy_protocol = "${version}"`,
          }),
        );
        const conn = await Deno.connect({ hostname: host, port: bouncer.port() });
        const local = conn.localAddr;
        await writeAll(conn, new TextEncoder().encode("payload"));
        await conn.closeWrite();
        await readAll(conn);
        conn.close();
        const bytes = await seen.promise;
        const client = family === 4 ? `${local.hostname}:${local.port}` : `[::1]:${local.port}`;
        const listen = family === 4 ? `127.0.0.1:${bouncer.port()}` : `[::1]:${bouncer.port()}`;
        const expected = `${version} ${client} -> ${listen}`;
        assertEquals(parseHeader(bytes), expected);
        assertEquals(new TextDecoder().decode(bytes.subarray(bytes.length - 7)), "payload");
      } finally {
        listener.close();
        await serving.catch(() => {});
      }
    }
  }
});

Deno.test({
  name:
    "nginx reads the PROXY header (listen ... proxy_protocol): it sees the real client, v1 and v2, IPv4 and IPv6",
  ignore: !(await has("nginx")),
  async fn() {
    await using dir = await tempDir();
    const port = freePortRange(1);
    await Deno.writeTextFile(
      `${dir}/nginx.conf`,
      `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log ${dir}/access.log;
  log_format proxied '$proxy_protocol_addr $proxy_protocol_port';
  server {
    listen 127.0.0.1:${port} proxy_protocol;
    access_log ${dir}/proxied.log proxied;
    location / { return 200 "$proxy_protocol_addr:$proxy_protocol_port"; }
  }
}
`,
    );
    const nginx = new Deno.Command("nginx", {
      args: ["-c", `${dir}/nginx.conf`, "-e", `${dir}/error.log`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await untilListening(port);
      for (const version of ["v1", "v2"]) {
        await using bouncer = await startBouncer(
          passRule({
            listen: "127.0.0.1:0",
            target: port,
            extra: `proxy_protocol = "${version}"`,
          }) + passRule({
            name: "v6",
            listen: "[::1]:0",
            target: port,
            extra: `proxy_protocol = "${version}"`,
          }),
        );
        const v4 = await get(bouncer.port(0));
        assertEquals(v4.body, v4.local, `${version} IPv4`);
        const v6 = await get(bouncer.port(1), "::1");
        assertEquals(v6.body, `::1:${v6.local.split(":").pop()}`, `${version} IPv6`);
      }
      const logged = (await Deno.readTextFile(`${dir}/proxied.log`)).trim().split("\n");
      assertEquals(logged.length, 4);
      assert(logged.every((line) => /^(127\.0\.0\.1|::1) \d+$/.test(line)), logged.join("\n"));
    } finally {
      nginx.kill("SIGTERM");
      await nginx.status;
    }
  },
});

Deno.test({
  name: "haproxy reads the PROXY header (accept-proxy): it sees the real client, v1 and v2",
  ignore: !(await has("haproxy")),
  async fn() {
    await using dir = await tempDir();
    const port = freePortRange(1);
    await Deno.writeTextFile(
      `${dir}/haproxy.cfg`,
      `global
  log stderr format short local0
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend fe
  bind 127.0.0.1:${port} accept-proxy
  http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
`,
    );
    const haproxy = new Deno.Command("haproxy", {
      args: ["-f", `${dir}/haproxy.cfg`, "-db"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await untilListening(port);
      for (const version of ["v1", "v2"]) {
        await using bouncer = await startBouncer(
          passRule({ listen: "127.0.0.1:0", target: port, extra: `proxy_protocol = "${version}"` }),
        );
        const { body, local } = await get(bouncer.port());
        assertEquals(body, local, version);
      }
    } finally {
      haproxy.kill("SIGTERM");
      await haproxy.status;
    }
  },
});
