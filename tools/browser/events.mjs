// A shopper's click on a search result is recorded once: with JavaScript by a beacon to
// /api/events/ (and the link then goes straight to the product), without JavaScript by
// the /click/ redirect. Prints one JSON report for test_events_browser.py.
// Usage: node events.mjs BASE_URL QUERY
import { launch, screenshotter, watchViolations } from "./browser.mjs";

const [baseUrl, query] = process.argv.slice(2);
const shot = screenshotter("");
const browser = await launch();
const report = { violations: [] };

// Every request to the events API or the click redirect, and its answer. Watched on the
// browser context: a beacon outlives the page that sent it.
function watch(context) {
  const seen = [];
  const entry = (request) => seen.find((s) => s.request === request);
  context.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/api/events/") || path.startsWith("/click/")) {
      seen.push({ request, path, method: request.method(), body: request.postData() });
    }
  });
  context.on("response", (response) => {
    const found = entry(response.request());
    if (found) found.status = response.status();
  });
  context.on("requestfailed", (request) => {
    const found = entry(request);
    if (found) found.failure = request.failure()?.errorText;
  });
  return seen;
}

const settled = (seen) => seen.length > 0 && seen.every((s) => s.status || s.failure);

async function until(condition, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

const plainly = (seen) => seen.map(({ request, ...rest }) => rest);

async function firstCard(page) {
  return page.$eval(".results .card a", (a) => ({
    sku: a.closest(".card").dataset.sku,
    href: a.getAttribute("href"),
    searchId: a.closest(".grid").dataset.searchId,
    productId: a.dataset.productId,
    position: a.dataset.position,
  }));
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await watchViolations(page, report.violations);
  const requests = watch(context);
  await page.goto(`${baseUrl}/?q=${encodeURIComponent(query)}`);
  report.withScript = { card: await firstCard(page) };
  await shot(page, "events-1-results");
  await Promise.all([page.waitForURL(/\/products\/\d+\/$/), page.click(".results .card a")]);
  report.withScript.landedOn = new URL(page.url()).pathname;
  report.withScript.title = (await page.textContent("h1")).trim();
  await until(() => settled(requests));
  report.withScript.requests = plainly(requests);
  report.withScript.cookies = (await context.cookies()).map((c) => ({
    name: c.name,
    sameSite: c.sameSite,
    httpOnly: c.httpOnly,
  }));
  await shot(page, "events-2-product");

  // The same shop without JavaScript: the link itself records the click.
  const plain = await browser.newContext({ javaScriptEnabled: false });
  const noScript = await plain.newPage();
  const plainRequests = watch(plain);
  await noScript.goto(`${baseUrl}/?q=${encodeURIComponent(query)}`);
  report.withoutScript = { card: await firstCard(noScript) };
  await Promise.all([noScript.waitForURL(/\/products\/\d+\/$/), noScript.click(".results .card a")]);
  report.withoutScript.landedOn = new URL(noScript.url()).pathname;
  await until(() => settled(plainRequests));
  report.withoutScript.requests = plainly(plainRequests);
} catch (error) {
  report.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
