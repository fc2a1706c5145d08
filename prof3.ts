import { parseConfig } from "./src/config/load.ts";
import { loadServices } from "./src/config/services.ts";
const text = await Deno.readTextFile("/tmp/rules10k.toml");
for (let i = 0; i < 6; i++) parseConfig(text, "x", loadServices());
