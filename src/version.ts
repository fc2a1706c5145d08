/** The portbounce version, from deno.json (embedded by `deno compile`). */
import meta from "../deno.json" with { type: "json" };

/** Semantic version of this build. */
export const VERSION: string = meta.version;
