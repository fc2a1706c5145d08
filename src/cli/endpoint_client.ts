/**
 * Asking a running portbounce through its status endpoint: where it is
 * (`--url`, or the `[server] status` of a rule file) and one GET of JSON.
 * What `status` and `sessions` share.
 *
 * @module
 */
import { formatAddress } from "../config/endpoint.ts";
import { loadRuleFile } from "../server/rule_file.ts";
import { UsageError } from "./args.ts";

/** The endpoint asked when neither --url nor -c says otherwise. */
export const DEFAULT_STATUS_URL = "http://127.0.0.1:9180";

/** Options both commands take. */
export const ENDPOINT_OPTIONS = {
  url: { type: "string" },
  config: { type: "string", short: "c" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * The endpoint's base URL: `--url` (a scheme may be left out:
 * `127.0.0.1:9180`, as `[server] status` writes it), the status address of
 * the rule file `-c` names, or the default.
 */
export async function endpointUrl(
  command: string,
  values: { url?: string; config?: string },
): Promise<URL> {
  if (values.url !== undefined && values.config !== undefined) {
    throw new UsageError(`${command}: --url and -c exclude each other`);
  }
  if (values.config !== undefined) {
    const loaded = await loadRuleFile(values.config);
    if (!loaded.ok) {
      throw new UsageError(`${command}: -c ${values.config}: ${loaded.problems[0].message}`);
    }
    const status = loaded.config.server.status;
    if (!status) {
      throw new UsageError(`${command}: ${values.config} has no [server] status endpoint`);
    }
    return statusUrl(status);
  }
  return parseEndpointUrl(command, values.url ?? DEFAULT_STATUS_URL);
}

/** `--url`: a URL, or an address without a scheme (`127.0.0.1:9180`, as `[server] status` writes it). */
export function parseEndpointUrl(command: string, text: string): URL {
  try {
    return new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new UsageError(
      `${command}: --url must be an address such as 127.0.0.1:9180 or http://127.0.0.1:9180, got "${text}"`,
    );
  }
}

/**
 * The URL of a `[server] status` address. A wildcard (`0.0.0.0`, `::`) is
 * asked on loopback: the endpoint answers only Host names of the address a
 * request reached.
 */
export function statusUrl(status: { hostname: string; port: number }): URL {
  const host = status.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : status.hostname === "::"
    ? "::1"
    : status.hostname;
  return new URL(`http://${formatAddress(host, status.port)}`);
}

/** GETs `path` from the endpoint as JSON, or says why there was no answer. */
export async function fetchJson<T>(base: URL, path: string): Promise<T | { error: string }> {
  const url = new URL(path, base);
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    if (!response.ok) {
      // The endpoint says why in a line of text (a rule that does not exist): pass it on.
      const why = (await response.text().catch(() => "")).trim().slice(0, 200);
      return { error: `${url}: HTTP ${response.status}${why ? `: ${why}` : ""}` };
    }
    return await response.json() as T;
  } catch (error) {
    return { error: `no answer from ${url}: ${(error as Error).message}` };
  }
}
