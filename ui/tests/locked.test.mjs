// The console on a daemon whose data volume is locked (a real LUKS2 volume in the VM harness,
// tests/vm/run.sh): everyone sees the locked notice; a wrong passphrase is refused with the
// reason; the right one unlocks, the console waits for the daemon and offers sign-in, and the
// admin signs in. Screenshots go to $CONSOLE_SCREENSHOTS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { base, launch, newPage, shot, signIn } from "./browser.mjs";

const password = process.env.CONSOLE_ADMIN_PASSWORD;
const passphrase = process.env.CONSOLE_PASSPHRASE;
const volume = process.env.CONSOLE_VOLUME ?? "data";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("an admin unlocks the data volume from the console and signs in", async () => {
  const page = await newPage(browser, { https: base.startsWith("https:") });
  page.setDefaultTimeout(60_000);
  await page.goto(`${base}/`);
  await page.getByTestId("locked-notice").waitFor();
  assert.equal(await page.getByTestId("sign-in-form").count(), 0, "no sign-in while locked");
  await shot(page, "10-locked");

  await page.getByTestId("unlock-admin").fill("admin");
  await page.getByTestId("unlock-password").fill(password);
  await page.getByTestId("unlock-volume").fill(volume);
  await page.getByTestId("unlock-passphrase").fill("wrong-passphrase");
  await page.getByTestId("unlock-submit").click();
  const error = page.getByTestId("unlock-error");
  await error.waitFor();
  assert.match(await error.innerText(), /passphrase/i);
  await shot(page, "11-unlock-refused");

  await page.getByTestId("unlock-passphrase").fill(passphrase);
  await page.getByTestId("unlock-submit").click();
  // The console waits for /readyz, then reloads into the sign-in page.
  await page.getByTestId("sign-in-form").waitFor({ timeout: 300_000 });
  await signIn(page, "admin", password);
  await shot(page, "12-unlocked");
  await page.context().close();
});
