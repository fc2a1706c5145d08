/**
 * Service names for ports (`http`, `ssh`, `domain`, ...), as getservbyname(3)
 * knows them: read from `/etc/services` when the system has one, with a small
 * built-in table of well-known names for systems that do not (minimal images
 * without Debian's `netbase`).
 *
 * @module
 */

/** Maps a service name (lower case) to its port, per protocol. */
export type ServiceTable = ReadonlyMap<string, { tcp?: number; udp?: number }>;

/** Well-known names used where `/etc/services` is absent (IANA assignments). */
const BUILT_IN: Record<string, number> = {
  echo: 7,
  discard: 9,
  daytime: 13,
  "ftp-data": 20,
  ftp: 21,
  ssh: 22,
  telnet: 23,
  smtp: 25,
  time: 37,
  domain: 53,
  tftp: 69,
  gopher: 70,
  finger: 79,
  http: 80,
  www: 80,
  kerberos: 88,
  pop3: 110,
  sunrpc: 111,
  auth: 113,
  nntp: 119,
  ntp: 123,
  imap: 143,
  imap2: 143,
  snmp: 161,
  "snmp-trap": 162,
  ldap: 389,
  https: 443,
  submissions: 465,
  syslog: 514,
  submission: 587,
  ldaps: 636,
  rsync: 873,
  imaps: 993,
  pop3s: 995,
  socks: 1080,
  openvpn: 1194,
  "ms-sql-s": 1433,
  mysql: 3306,
  postgresql: 5432,
  "http-alt": 8080,
};

/** Parses the text of an `/etc/services` file. */
export function parseServices(
  text: string,
): Map<string, { tcp?: number; udp?: number }> {
  const table = new Map<string, { tcp?: number; udp?: number }>();
  for (const rawLine of text.split("\n")) {
    const line = rawLine.replace(/#.*/, "").trim();
    if (!line) continue;
    const [name, portProto, ...aliases] = line.split(/\s+/);
    const match = /^(\d+)\/(tcp|udp)$/.exec(portProto ?? "");
    if (!match) continue;
    const port = Number(match[1]);
    const proto = match[2] as "tcp" | "udp";
    for (const key of [name, ...aliases]) {
      const entry = table.get(key.toLowerCase()) ?? {};
      entry[proto] ??= port;
      table.set(key.toLowerCase(), entry);
    }
  }
  return table;
}

/** The built-in table, for both protocols. */
export function builtInServices(): Map<string, { tcp?: number; udp?: number }> {
  return new Map(
    Object.entries(BUILT_IN).map((
      [name, port],
    ) => [name, { tcp: port, udp: port }]),
  );
}

/** Loads `/etc/services`, falling back to the built-in table where it cannot be read. */
export function loadServices(path = "/etc/services"): ServiceTable {
  try {
    const table = parseServices(Deno.readTextFileSync(path));
    if (table.size > 0) return table;
  } catch {
    // No services file: the built-in table below serves.
  }
  return builtInServices();
}
