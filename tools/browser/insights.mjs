// The merchandiser's Search insights page in the admin: the link on the index, the filters,
// the two charts, the tables, the themes of zero-result queries and a CSV export.
// Usage: node insights.mjs BASE_URL START END (admin user "admin", password "admin-pass").
// Prints one JSON report for test_insights_browser.py to check.
import { launch, screenshotter, watchViolations } from "./browser.mjs";

const [baseUrl, start, end] = process.argv.slice(2);
const shot = screenshotter("insights-");
const browser = await launch();
const report = { violations: [] };
const text = async (page, selector) => (await page.textContent(selector))?.replace(/\s+/g, " ").trim();
const column = (page, selector) =>
  page.$$eval(`${selector} tbody tr`, (rows) => rows.map((row) => row.querySelector("td, th").textContent.trim()));
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(30_000);
  // The charts are inline SVG with inline styles: the policy must allow them, and it does.
  await watchViolations(page, report.violations);
  await page.goto(`${baseUrl}/admin/login/?next=/admin/`);
  await page.fill("#id_username", "admin");
  await page.fill("#id_password", "admin-pass");
  await Promise.all([page.waitForURL(/\/admin\/$/), page.click('input[type="submit"]')]);

  // From the index, by its link; then the date range through the form.
  await shot(page, "0-index");
  await Promise.all([page.waitForURL(/insights/), page.click("text=Search insights")]);
  await page.fill("#id_start", start);
  await page.fill("#id_end", end);
  await Promise.all([page.waitForURL(/start=/), page.click('#insights-filters input[type="submit"]')]);
  report.url = page.url();
  report.summary = await text(page, "#insights-summary");
  report.charts = await page.$$eval("#insights-charts svg", (svgs) =>
    svgs.map((svg) => {
      const box = svg.getBoundingClientRect();
      return {
        label: svg.getAttribute("aria-label"),
        points: svg.querySelector("polyline").getAttribute("points").trim().split(/\s+/).length,
        visible: box.width > 100 && box.height > 50,
      };
    }),
  );
  report.top = await column(page, "#top-queries");
  report.zero = await column(page, "#zero-result-queries");
  report.noClicks = await column(page, "#no-click-queries");
  report.themes = await page.$$eval("#zero-result-clusters tr.cluster", (rows) =>
    rows.map((row) => ({
      name: row.querySelector("th").textContent.trim(),
      queries: row.querySelector(".cluster-queries").textContent.trim(),
    })),
  );
  // Nothing a shopper typed may widen the page (a 500-character query wraps in its cell).
  report.width = await page.evaluate(() => document.documentElement.scrollWidth);
  report.viewportWidth = page.viewportSize().width;
  await shot(page, "1-page");

  const csvHref = await page.getAttribute("#top-queries a.csv", "href");
  const csv = await page.request.get(new URL(csvHref, page.url()).href);
  report.csv = { status: csv.status(), type: csv.headers()["content-type"], body: await csv.text() };
} catch (error) {
  report.error = String(error?.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
