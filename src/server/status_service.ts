/**
 * Starting, moving and stopping the status endpoint of a running daemon.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { Config } from "../config/types.ts";
import { describeBindError } from "../relay/errors.ts";
import type { Engine } from "./engine.ts";
import { serveStatus, type StatusEndpoint } from "../status/http.ts";
import type { StatusInput } from "../status/report.ts";
import { VERSION } from "../version.ts";

/** The status endpoint as configured by the rule file in force. */
export class StatusService {
  #endpoint: StatusEndpoint | null = null;
  #address: string | null = null;

  constructor(readonly engine: Engine, readonly log: Logger, private config: Config) {}

  #input = (): StatusInput => ({
    version: VERSION,
    source: this.config.source,
    startedAt: this.engine.startedAt,
    now: Date.now(),
    rules: this.engine.rules,
    listeners: this.engine.listenerStates(),
    stats: this.engine.stats,
  });

  /**
   * Serves the endpoint `config` asks for (moving or stopping it if that
   * changed). Returns why it could not be bound, or null.
   */
  async apply(config: Config): Promise<string | null> {
    this.config = config;
    const wanted = config.server.status;
    const key = wanted ? `${wanted.hostname} ${wanted.port}` : null;
    if (key === this.#address) return null;
    await this.close();
    if (!wanted) return null;
    try {
      this.#endpoint = serveStatus(wanted, this.#input);
      this.#address = key;
      this.log.info("status endpoint on http://{address}/ (/status.json, /metrics)", {
        address: this.#endpoint.address,
      });
      return null;
    } catch (error) {
      return describeBindError(error, wanted.port);
    }
  }

  /** `ip:port` the endpoint is bound to, or null when it is off. */
  get address(): string | null {
    return this.#endpoint?.address ?? null;
  }

  async close(): Promise<void> {
    const endpoint = this.#endpoint;
    this.#endpoint = null;
    this.#address = null;
    await endpoint?.close();
  }
}
