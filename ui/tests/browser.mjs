// What the browser scenarios share: Debian's headless Chromium started by playwright-core with
// the flags this machine needs, pages of a given size, screenshots and sign-in.
import { chromium, selectors } from "playwright-core";
import { join } from "node:path";

/** The daemon under test, from tests/console/main.rs (or the VM harness). */
export const base = process.env.CONSOLE_URL.replace(/\/$/, "");

// Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
const flags = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** Starts Chromium; the tests find elements by their `data-test` attribute. */
export async function launch() {
  selectors.setTestIdAttribute("data-test");
  return chromium.launch({ executablePath: process.env.CONSOLE_CHROMIUM, args: flags });
}

/** A page in a fresh context (no cookies, no cache) of the given size. */
export async function newPage(browser, { width = 1280, height = 800, https = false } = {}) {
  // The VM's daemon answers over TLS with its own self-signed certificate.
  const context = await browser.newContext({ viewport: { width, height }, ignoreHTTPSErrors: https });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  return page;
}

/** A full-page screenshot into $CONSOLE_SCREENSHOTS. */
export async function shot(page, name) {
  await page.screenshot({ path: join(process.env.CONSOLE_SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Signs in through the sign-in form and waits for the signed-in shell. */
export async function signIn(page, name, password) {
  await page.getByTestId("sign-in-username").fill(name);
  await page.getByTestId("sign-in-password").fill(password);
  await page.getByTestId("sign-in-submit").click();
  await page.getByTestId("current-user").waitFor();
}
