// Drives the relayarr dashboard in a real headless Chromium (the system's, through
// playwright-core). Run by tests/dashboard_browser.rs, which starts the real relay, posts
// events, and checks the API afterwards. Arguments (JSON on argv[2]):
//   { url, token, eventId, failedHook, okHook, newCap, screenshots, chromium }
// Exits non-zero, with a reason on stderr, when a check fails or the page logged an error.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const args = JSON.parse(process.argv[2]);
const problems = [];
const fail = (msg) => { problems.push(msg); };

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
mkdirSync(args.screenshots, { recursive: true });
const shot = (page, name) => page.screenshot({ path: `${args.screenshots}/${name}.png`, fullPage: true });

async function session(viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") fail(`console error: ${m.text()}`); });
  page.on("pageerror", (e) => fail(`page error: ${e.message}`));
  page.on("requestfailed", (r) => fail(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  return { context, page };
}

try {
  // Desktop.
  const { context, page } = await session({ width: 1280, height: 860 });
  await page.goto(args.url);
  await page.waitForSelector("#login:not([hidden])");
  await shot(page, "01-login");
  await page.fill("#token", args.token);
  await page.click("#login-form button[type=submit]");
  const okCard = page.locator(`[data-target="${args.okHook}"]`);
  await okCard.waitFor();
  // The token lives in sessionStorage, not localStorage.
  const stored = await page.evaluate(() => [sessionStorage.getItem("relayarr.token"), Object.keys(localStorage).length]);
  if (stored[0] !== args.token || stored[1] !== 0) fail(`token storage: ${JSON.stringify(stored)}`);
  await page.locator(`[data-target="${args.failedHook}"] .counters`).getByText("failed").waitFor();
  await shot(page, "02-targets");

  // Change a cap through the UI.
  await okCard.locator(".cap").fill(String(args.newCap));
  await okCard.locator(".save").click();
  await page.getByText(`Saved limits of ${args.okHook}.`).waitFor();
  await okCard.locator(".counters").getByText(`/ ${args.newCap}`).waitFor();

  // The event is in the table; its failed delivery shows the response excerpt.
  await page.click('#tabs button[data-tab="events"]');
  const row = page.locator(`tr[data-event-id="${args.eventId}"]`);
  await row.waitFor();
  await row.click();
  await page.locator("#event-detail .response", { hasText: args.failedExcerpt }).first().waitFor();
  await shot(page, "03-event");

  await page.click('#tabs button[data-tab="tree"]');
  await page.locator("#tree-root .node b", { hasText: `hook:${args.okHook}` }).first().waitFor();
  await shot(page, "04-tree");
  await page.click('#tabs button[data-tab="queues"]');
  await page.locator("#debounce-summary").getByText("open group").waitFor();
  await shot(page, "05-queues");
  await context.close();

  // A phone: nothing overflows sideways, and the controls are reachable.
  const phone = await session({ width: 390, height: 844 });
  await phone.page.goto(args.url);
  await phone.page.fill("#token", args.token);
  await phone.page.click("#login-form button[type=submit]");
  await phone.page.locator(`[data-target="${args.okHook}"] .save`).waitFor();
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) fail(`the page is ${overflow}px wider than a 390px phone screen`);
  await shot(phone.page, "06-phone-targets");
  await phone.page.click('#tabs button[data-tab="events"]');
  await phone.page.locator(`tr[data-event-id="${args.eventId}"]`).waitFor();
  await shot(phone.page, "07-phone-events");
  await phone.context.close();
} catch (e) {
  fail(`step failed: ${e.message}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("dashboard checks passed");
