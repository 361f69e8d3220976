// The console in a real browser (Debian's headless Chromium driven by playwright-core), against
// a daemon that tests/console/main.rs started: sign in, upload, search, ask, permissions, keys,
// sign out. Screenshots of every page go to $CONSOLE_SCREENSHOTS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { base, launch, newPage as open, shot, signIn as signInWith } from "./browser.mjs";

const admin = { name: "admin", password: process.env.CONSOLE_ADMIN_PASSWORD };
const viewer = { name: "vera", password: process.env.CONSOLE_VIEWER_PASSWORD };
const uploads = [process.env.CONSOLE_UPLOAD_A, process.env.CONSOLE_UPLOAD_B];

let browser;
let adminPage;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

const newPage = (width, height) => open(browser, { width, height });

async function signIn(page, who) {
  await page.goto(`${base}/`);
  await signInWith(page, who.name, who.password);
}

test("a wrong password is refused with the server's reason", async () => {
  const page = await newPage();
  await page.goto(`${base}/`);
  await page.getByTestId("first-run-hint").waitFor();
  await shot(page, "01-sign-in");
  await page.getByTestId("sign-in-username").fill("admin");
  await page.getByTestId("sign-in-password").fill("not the password");
  await page.getByTestId("sign-in-submit").click();
  const error = page.getByTestId("sign-in-error");
  await error.waitFor();
  assert.match(await error.innerText(), /password/i);
  await shot(page, "02-sign-in-refused");
  assert.equal(await page.getByTestId("current-user").count(), 0);
  await page.context().close();
});

test("an admin signs in, and the session survives a reload through its cookie", async () => {
  adminPage = await newPage();
  await signIn(adminPage, admin);
  assert.match(await adminPage.getByTestId("current-user").innerText(), /admin/);
  for (const admins of ["nav-system", "nav-users", "nav-audit"]) {
    assert.ok(await adminPage.getByTestId(admins).isVisible(), `${admins} is shown to admins`);
  }
  const cookies = await adminPage.context().cookies();
  const session = cookies.find((c) => c.name === "sparkbrain_session");
  assert.ok(session, "the session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  // Page scripts cannot read it.
  assert.equal(await adminPage.evaluate(() => document.cookie.includes("sparkbrain_session")), false);
  await adminPage.reload();
  await adminPage.getByTestId("current-user").waitFor();
});

test("uploads two documents and sees both reach indexed", async () => {
  const page = adminPage;
  await page.goto(`${base}/#/collections`);
  await page.getByTestId("new-collection-name").fill("handbook");
  await page.getByTestId("new-collection-description").fill("Documents for the browser test");
  await page.getByTestId("create-collection").click();
  // A new collection opens at once, ready for its documents.
  await page.waitForURL(/#\/collections\/handbook$/);
  await page.getByTestId("collection-facts").waitFor();
  await page.getByTestId("upload-files").setInputFiles(uploads);
  const items = page.getByTestId("upload-item");
  await assertEventually(async () => (await items.count()) === 2, "two uploads listed");
  await assertEventually(
    async () => (await page.locator("[data-test=upload-item][data-state=done]").count()) === 2,
    "both uploads accepted",
  );
  const statuses = page.getByTestId("document-status");
  await assertEventually(async () => {
    const texts = await statuses.allInnerTexts();
    return texts.length === 2 && texts.every((t) => t.trim() === "indexed");
  }, "both documents indexed", 180_000);
  await shot(page, "03-collection-indexed");
  await page.goto(`${base}/#/collections`);
  await page.getByTestId("collection-row-handbook").waitFor();
  await shot(page, "04-collections");
});

test("search finds the documents with a highlighted snippet", async () => {
  const page = adminPage;
  await page.goto(`${base}/#/search`);
  await page.getByTestId("search-query").fill("Debian project");
  await page.getByTestId("search-submit").click();
  const first = page.getByTestId("hit-1");
  await first.waitFor();
  assert.ok((await first.locator("mark").count()) > 0, "the snippet highlights the query's words");
  assert.match(await first.innerText(), /Debian/);
  await shot(page, "05-search");
});

test("ask streams an answer whose citation opens the source document", async () => {
  const page = adminPage;
  await page.goto(`${base}/#/ask`);
  await page.getByTestId("ask-collection-handbook").check();
  await page.getByTestId("ask-question").fill("What is the Debian project?");
  await page.getByTestId("ask-submit").click();
  const answer = page.getByTestId("answer").last();
  await answer.waitFor();
  await assertEventually(async () => (await answer.getAttribute("aria-busy")) !== "true", "the answer finished", 60_000);
  await shot(page, "06-ask-answered");
  assert.ok((await answer.innerText()).trim().length > 0, "an answer was written");
  const citation = page.getByTestId("citation-1").last();
  await citation.click();
  const passage = page.getByTestId("cited-passage");
  await passage.waitFor();
  assert.ok((await passage.innerText()).trim().length > 0);
  await shot(page, "06-ask");
  const [doc] = await Promise.all([
    page.context().waitForEvent("page"),
    page.getByTestId("open-cited-document").click(),
  ]);
  // The tab opens at once and receives the document once it is fetched with the token.
  await doc.waitForURL(/^blob:/);
  await doc.close();
  await page.getByTestId("chat-list").waitFor();
});

test("the admin pages render: models, system, users, audit, keys", async () => {
  const page = adminPage;
  for (const [route, marker] of [
    ["models", "models-table"],
    ["system", "daemon-version"],
    ["users", "users-table"],
    ["audit", "audit-table"],
  ]) {
    await page.goto(`${base}/#/${route}`);
    await page.getByTestId(marker).waitFor();
    if (route === "system") {
      assert.ok(await page.getByTestId("cpu-only").isVisible(), "no GPU here: the CPU-only notice shows");
      assert.match(await page.getByTestId("disk-free").innerText(), /\d.* of \d/);
    }
    await shot(page, `07-${route}`);
  }
});

test("a new API key is shown once", async () => {
  const page = adminPage;
  await page.goto(`${base}/#/keys`);
  await page.getByTestId("new-key-name").fill("browser-test");
  await page.getByTestId("create-key").click();
  const secret = page.getByTestId("new-key-secret");
  await secret.waitFor();
  const key = (await secret.innerText()).trim();
  assert.ok(key.length > 20, `a key was shown: ${key}`);
  await shot(page, "08-keys");
  await page.reload();
  await page.getByTestId("keys-table").waitFor();
  assert.equal(await page.getByTestId("new-key-secret").count(), 0, "the key is not shown again");
  assert.ok(!(await page.getByTestId("keys-table").innerText()).includes(key));
});

test("a viewer sees neither the admin pages nor another user's collection", async () => {
  const page = await newPage(768, 1024);
  await signIn(page, viewer);
  for (const admins of ["nav-system", "nav-users", "nav-audit"]) {
    assert.equal(await page.getByTestId(admins).count(), 0, `${admins} is not shown to viewers`);
  }
  await page.goto(`${base}/#/users`);
  await page.waitForURL(/#\/ask$/);
  assert.equal(await page.getByTestId("users-table").count(), 0);
  await page.goto(`${base}/#/collections`);
  await page.getByTestId("collections-table").waitFor();
  assert.equal(await page.getByTestId("collection-row-handbook").count(), 0);
  await shot(page, "09-viewer-collections-tablet");
  await page.goto(`${base}/#/search`);
  await page.getByTestId("search-query").fill("Debian project");
  await page.getByTestId("search-submit").click();
  await page.getByTestId("search-summary").waitFor();
  assert.equal(await page.getByTestId("hit-1").count(), 0, "no hit from a collection it may not read");
  await page.context().close();
});

test("signing out ends the session for good", async () => {
  const page = adminPage;
  await page.getByTestId("sign-out").click();
  await page.getByTestId("sign-in-form").waitFor();
  await page.reload();
  await page.getByTestId("sign-in-form").waitFor();
  assert.equal(await page.getByTestId("current-user").count(), 0);
  await page.context().close();
});

async function assertEventually(check, what, timeout = 30_000) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`timed out waiting until ${what}`);
}
