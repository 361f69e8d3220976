// The System page on a daemon with two GPUs (the fake NVML library of tests/fixtures: this
// machine has none): each GPU with its health, charts drawn from the history endpoint, and the
// XID it reported. Screenshots go to $CONSOLE_SCREENSHOTS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { base, launch, newPage, shot, signIn } from "./browser.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("each GPU is shown with live charts and its XID", async () => {
  const page = await newPage(browser);
  await page.goto(`${base}/`);
  await signIn(page, "admin", process.env.CONSOLE_ADMIN_PASSWORD);
  await page.goto(`${base}/#/system`);
  for (const gpu of ["gpu-0", "gpu-1"]) {
    const card = page.getByTestId(gpu);
    await card.waitFor();
    assert.match(await card.innerText(), /H100/);
    for (const chart of ["chart-util", "chart-memory", "chart-temperature", "chart-power"]) {
      const svg = card.getByTestId(chart).locator("svg");
      await svg.first().waitFor();
      // A line needs at least two points of history.
      const drawn = await svg.first().locator("path, polyline").count();
      assert.ok(drawn > 0, `${gpu} ${chart} draws a line`);
    }
  }
  assert.equal(await page.getByTestId("cpu-only").count(), 0);
  assert.match(await page.getByTestId("gpu-1").getByTestId("gpu-xids").innerText(), /31/);
  await shot(page, "13-system-gpus");
  await page.context().close();
});
