// The System page on a daemon with two GPUs (the fake NVML library of tests/fixtures: this
// machine has none): each GPU with its health, charts drawn from the history endpoint, and the
// XID it reported; and its Backups card. With $CONSOLE_BACKUP_TARGET (the daemon's
// `[backup] target`, a directory) "Back up now" makes an archive there and lists it; without
// it the card says how to configure a target and shows the daemon's refusal. Screenshots go to
// $CONSOLE_SCREENSHOTS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
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

const target = process.env.CONSOLE_BACKUP_TARGET;

/** Signs in as the admin and opens the System page's Backups card. */
async function backupsCard() {
  const page = await newPage(browser);
  await page.goto(`${base}/`);
  await signIn(page, "admin", process.env.CONSOLE_ADMIN_PASSWORD);
  await page.goto(`${base}/#/system`);
  const card = page.getByTestId("backups");
  await card.getByTestId("backup-failures").waitFor();
  return { page, card };
}

/**
 * Holds the next POST /api/v1/backups until `release()` is called, so that the page can be
 * seen while the backup runs however fast the daemon is.
 */
async function holdBackup(page) {
  let release;
  const gate = new Promise((r) => {
    release = r;
  });
  await page.route("**/api/v1/backups", async (route) => {
    if (route.request().method() === "POST") await gate;
    await route.fallback();
  });
  return release;
}

/** While the backup runs: the button is disabled and says so, and so does the live region. */
async function assertRunning(card) {
  const button = card.getByTestId("backup-now");
  await card.locator('[data-test="backup-now"]:disabled').waitFor();
  assert.equal(await card.getAttribute("aria-busy"), "true");
  assert.equal((await button.innerText()).trim(), "Backing up…");
  assert.match(await card.getByTestId("backup-result").innerText(), /Backing up…/);
  assert.equal(await card.getByTestId("backup-result").getAttribute("aria-live"), "polite");
}

test("without a backup target the Backups card says how to set one, and Back up now shows the refusal", { skip: Boolean(target) }, async () => {
  const { page, card } = await backupsCard();
  const notice = card.getByTestId("no-backup-target");
  await notice.waitFor();
  const text = await notice.innerText();
  assert.match(text, /no backup target configured/i);
  assert.match(text, /\[backup\] target/);
  assert.match(text, /sparkbrain-backup\.timer/);
  assert.equal(await card.getByTestId("backup-target").count(), 0);
  assert.equal(await card.getByTestId("backups-table").count(), 0);
  assert.equal((await card.getByTestId("backup-last-success").innerText()).trim(), "never");
  assert.equal((await card.getByTestId("backup-failures").innerText()).trim(), "0");
  assert.match(await card.getByTestId("backup-encrypted").innerText(), /not encrypted/);

  const release = await holdBackup(page);
  const button = card.getByTestId("backup-now");
  assert.equal((await button.innerText()).trim(), "Back up now");
  await button.click();
  await assertRunning(card);
  release();
  // 422: the daemon's problem detail, as an alert next to the button.
  const error = card.getByTestId("backup-error");
  await error.waitFor();
  assert.equal(await error.getAttribute("role"), "alert");
  assert.match(await error.innerText(), /no backup target/);
  assert.equal(await button.isDisabled(), false);
  assert.equal((await button.innerText()).trim(), "Back up now");
  assert.equal((await card.getByTestId("backup-result").innerText()).trim(), "");
  await shot(page, "14-system-backups-no-target");
  await page.context().close();
});

test("with a backup target, Back up now makes an archive and lists it", { skip: !target }, async () => {
  const { page, card } = await backupsCard();
  assert.equal(await card.getByTestId("no-backup-target").count(), 0);
  assert.equal((await card.getByTestId("backup-target").innerText()).trim(), target);
  const before = await card.locator('[data-test^="backup-row-"]').count();

  const release = await holdBackup(page);
  await card.getByTestId("backup-now").click();
  await assertRunning(card);
  release();
  const result = card.getByTestId("backup-result");
  await result.getByText("Backed up:").waitFor({ timeout: 120_000 });
  const name = (await result.innerText()).match(/sparkbrain-\d{8}T\d{6}Z\.tar\.zst(?:\.age)?/)?.[0];
  assert.ok(name, `the result names the archive: ${await result.innerText()}`);
  assert.equal(await card.getByTestId("backup-error").count(), 0);
  assert.equal(await card.getByTestId("backup-now").isDisabled(), false);

  // The archive is in the target, listed with its size, and the last success is it.
  assert.ok(existsSync(join(target, name)), `${name} is in ${target}`);
  const row = card.getByTestId(`backup-row-${name}`);
  await row.waitFor();
  const size = statSync(join(target, name)).size;
  assert.ok(size > 0);
  assert.match(await row.innerText(), /\d(?:\.\d)? (?:B|KiB|MiB|GiB)/);
  assert.equal(await card.locator('[data-test^="backup-row-"]').count(), before + 1);
  assert.notEqual((await card.getByTestId("backup-last-success").innerText()).trim(), "never");
  assert.equal(await card.getByTestId("backup-last-success").locator(`[title="${name}"]`).count(), 1);
  await shot(page, "14-system-backups");
  await page.context().close();
});
