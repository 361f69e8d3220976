// First load of the console in headless Chromium over loopback, in a fresh browser context
// each round (nothing cached): bytes transferred (encoded, as on the wire, headers included)
// and time from navigation start until the sign-in form can be used; then, signed in, until
// the Ask page has loaded its collections. Prints JSON with the medians.
//
// usage: node first_load.mjs BASE_URL ADMIN_PASSWORD [ROUNDS]
import { createRequire } from "node:module";

// playwright-core is one of ui/'s pinned packages.
const { chromium, selectors } = createRequire(new URL("../../ui/package.json", import.meta.url))(
  "playwright-core",
);

const [base, password, rounds = "10"] = process.argv.slice(2);
const flags = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
selectors.setTestIdAttribute("data-test");
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: flags });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const bytes = [], interactive = [], signedIn = [], requests = [];
for (let i = 0; i < Number(rounds); i++) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  let total = 0, count = 0;
  cdp.on("Network.loadingFinished", (e) => { total += e.encodedDataLength; count += 1; });
  await page.goto(`${base}/`);
  await page.getByTestId("sign-in-submit").waitFor();
  interactive.push(await page.evaluate(() => performance.now()));
  bytes.push(total);
  requests.push(count);
  await page.getByTestId("sign-in-username").fill("admin");
  await page.getByTestId("sign-in-password").fill(password);
  const started = await page.evaluate(() => performance.now());
  await page.getByTestId("sign-in-submit").click();
  await page.getByTestId("ask-question").waitFor();
  signedIn.push((await page.evaluate(() => performance.now())) - started);
  await context.close();
}
await browser.close();
console.log(JSON.stringify({
  rounds: Number(rounds),
  first_load_bytes: median(bytes),
  first_load_requests: median(requests),
  interactive_ms: median(interactive),
  sign_in_to_ask_ms: median(signedIn),
}));
