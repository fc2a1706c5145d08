import { assertEquals } from "../assert.ts";
import { closest, didYouMean } from "../../src/config/suggest.ts";

Deno.test("did-you-mean finds close keys and stays quiet for far ones", () => {
  assertEquals(closest("bounce_too", ["listen", "bounce_to"]), "bounce_to");
  assertEquals(closest("lsten", ["listen", "from"]), "listen");
  assertEquals(closest("xyz", ["listen", "from"]), undefined);
  assertEquals(didYouMean("Listen", ["listen"]), '; did you mean "listen"?');
  assertEquals(didYouMean("completely", ["listen"]), "");
});
