// What shoppers and merchandisers see of synonyms, rules, sorting and related products.
// Usage: node merchandising.mjs BASE_URL RULE_ID (admin user "admin", password "admin-pass").
// Prints one JSON report for test_merchandising_browser.py to check.
import { launch, screenshotter } from "./browser.mjs";

const [baseUrl, ruleId] = process.argv.slice(2);
const shot = screenshotter("merch-");
const browser = await launch();
const report = {};
const cards = (page, selector) =>
  page.$$eval(`${selector} .card`, (found) =>
    found.map((card) => ({
      sku: card.dataset.sku,
      price: card.querySelector(".price").textContent.trim(),
      imageLoaded: Boolean(card.querySelector("img")?.naturalWidth),
    })),
  );
const text = async (page, selector) => (await page.textContent(selector))?.replace(/\s+/g, " ").trim();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);

  // A thin page: two matches, then related products under a divider.
  await page.goto(`${baseUrl}/?q=striped`);
  report.thin = {
    summary: await text(page, ".results .summary"),
    matches: await cards(page, ".results"),
    divider: await text(page, ".related-divider"),
    related: await cards(page, ".related"),
  };
  await shot(page, "1-related");

  // Sorting: a link, then the matches in price order; the related products stay below.
  await Promise.all([page.waitForURL(/sort=price_desc/), page.click('[data-sort="price_desc"]')]);
  report.sorted = {
    current: await text(page, "nav.sort strong"),
    matches: await cards(page, ".results"),
  };
  await shot(page, "2-sorted");

  // A rule and synonyms: "sneaker" finds the boots through a synonym, the t-shirt is pinned.
  await page.goto(`${baseUrl}/?q=sneaker`);
  report.rule = {
    synonyms: await text(page, "p.synonyms"),
    matches: await cards(page, ".results"),
    related: await cards(page, ".related"),
  };
  await shot(page, "3-rule");

  // Nonsense with a filter: nothing, and what to try instead.
  await page.goto(`${baseUrl}/?q=asdfgh&brand=Acme`);
  report.nonsense = {
    message: await text(page, ".no-results"),
    chips: await page.$$eval(".suggestions a.chip", (links) => links.map((a) => a.textContent.trim())),
    related: await page.$$eval(".related .card", (found) => found.length),
  };
  await shot(page, "4-nonsense");
  await Promise.all([page.waitForURL((url) => !url.search.includes("brand")), page.click('[data-remove="brand"]')]);
  report.nonsense.afterRemoval = page.url();

  // The merchandiser, on a desktop screen: the rule's page with its preview beside it.
  await page.setViewportSize({ width: 1600, height: 1000 });
  await page.goto(`${baseUrl}/admin/login/?next=/admin/search/merchandisingrule/${ruleId}/change/`);
  await page.fill("#id_username", "admin");
  await page.fill("#id_password", "admin-pass");
  await Promise.all([page.waitForURL(/merchandisingrule/), page.click('input[type="submit"]')]);
  const form = await page.locator("#content-main").boundingBox();
  const preview = await page.locator(".rule-preview").boundingBox();
  report.admin = {
    previewBesideForm: Boolean(form && preview && preview.x >= form.x + form.width - 1 && preview.y < form.y + 200),
    previewRows: await page.$$eval(".preview-results tr[data-sku]", (rows) =>
      rows.map((row) => ({ sku: row.dataset.sku, badges: [...row.querySelectorAll(".badge")].map((b) => b.textContent.trim()) })),
    ),
    problems: await text(page, ".field-problems .readonly"),
  };
  await shot(page, "5-admin-rule");
  await page.goto(`${baseUrl}/admin/search/merchandisingrule/`);
  report.admin.listing = await text(page, "#result_list tbody");
  await shot(page, "6-admin-rules");
  await page.goto(`${baseUrl}/admin/search/synonymset/`);
  report.admin.synonyms = await text(page, "#result_list tbody");
  await shot(page, "7-admin-synonyms");

  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(`${baseUrl}/?q=striped&sort=price_asc`);
  report.phone = await phone.evaluate(() => ({
    overflows: document.documentElement.scrollWidth > window.innerWidth,
    matches: document.querySelectorAll(".results .card").length,
    related: document.querySelectorAll(".related .card").length,
  }));
  await shot(phone, "8-phone");
} catch (error) {
  report.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
