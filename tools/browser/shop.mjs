// What a shopper sees: type a query, apply filters, search by photo, open a product, on a
// desktop and a phone screen. Prints one JSON report for test_shop_browser.py to check.
// Usage: node shop.mjs BASE_URL PHOTO_PATH
import { launch, screenshotter } from "./browser.mjs";

const [baseUrl, photoPath] = process.argv.slice(2);
const shot = screenshotter("");
const browser = await launch();
const report = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  const results = () =>
    page.$$eval(".results .card", (cards) =>
      cards.map((card) => ({
        sku: card.dataset.sku,
        title: card.querySelector(".title").textContent.trim(),
        imageLoaded: Boolean(card.querySelector("img")?.naturalWidth),
      })),
    );
  const summary = () => page.textContent(".results .summary, .results .no-results");

  await page.goto(baseUrl);
  await page.fill('input[name="q"]', "striped");
  await Promise.all([page.waitForURL(/q=striped/), page.press('input[name="q"]', "Enter")]);
  await page.waitForLoadState("load");
  report.query = { summary: (await summary()).trim(), results: await results() };
  await shot(page, "1-query");
  report.query.facets = await page.$$eval("[data-facet]", (links) =>
    links.map((a) => `${a.dataset.facet}:${a.dataset.value}:${a.nextElementSibling.textContent}`),
  );

  await Promise.all([page.waitForURL(/category=/), page.click('[data-value="clothing-t-shirts"]')]);
  report.category = { summary: (await summary()).trim(), results: await results() };

  await page.goto(`${baseUrl}/?q=striped`);
  await page.check('input[name="in_stock"]');
  await Promise.all([page.waitForURL(/in_stock=true/), page.click(".filter-form button")]);
  report.inStock = { summary: (await summary()).trim(), results: await results() };

  await page.setInputFiles("#photo-input", photoPath);
  await Promise.all([page.waitForURL(/photo=/), page.click('form.photo button[type="submit"]')]);
  await page.waitForLoadState("load");
  report.photo = { summary: (await summary()).trim(), results: await results() };
  await shot(page, "2-photo");

  await Promise.all([page.waitForURL(/products\/\d+/), page.click(".results .card a")]);
  report.product = {
    title: (await page.textContent("h1")).trim(),
    similar: await page.$$eval(".similar .card", (cards) => cards.map((c) => c.dataset.sku)),
  };
  await shot(page, "3-product");

  // Suggestions as you type: a prefix, the keyboard picks one, Enter searches it.
  await page.goto(baseUrl);
  const box = page.getByRole("combobox", { name: "Search products" });
  await box.pressSequentially("stri", { delay: 80 });
  await page.waitForSelector('#completions [role="option"]');
  const options = () =>
    page.$$eval('#completions [role="option"]', (items) =>
      items.map((item) => item.querySelector(".text").textContent),
    );
  report.suggest = { expanded: await box.getAttribute("aria-expanded"), options: await options() };
  await box.press("ArrowDown");
  await box.press("ArrowDown");
  await shot(page, "5-suggest");
  report.suggest.selected = await page.$eval(
    '#completions [aria-selected="true"] .text',
    (item) => item.textContent,
  );
  report.suggest.activeIsSelected = await page.evaluate(
    () =>
      document.getElementById(
        document.querySelector('input[name="q"]').getAttribute("aria-activedescendant"),
      )?.getAttribute("aria-selected") === "true",
  );
  await Promise.all([page.waitForURL(/q=Red\+striped/), box.press("Enter")]);
  await page.waitForLoadState("load");
  report.suggest.box = await box.inputValue();
  report.suggest.summary = (await summary()).trim();
  report.suggest.results = await results();
  await box.fill("");
  await box.pressSequentially("blu", { delay: 80 });
  await page.waitForSelector('#completions [role="option"]');
  await box.press("Escape");
  report.suggest.afterEscape = {
    expanded: await box.getAttribute("aria-expanded"),
    hidden: await page.$eval("#completions", (list) => list.hidden),
    box: await box.inputValue(),
  };

  // A misspelt query: the page says what it searched, and offers the words as typed.
  await page.goto(`${baseUrl}/?q=stripped+shirt`);
  report.typo = {
    corrected: (await page.textContent(".corrected")).replace(/\s+/g, " ").trim(),
    results: await results(),
  };
  await shot(page, "6-typo");
  await Promise.all([page.waitForURL(/correct=false/), page.click("a.search-original")]);
  report.typo.original = (await summary()).trim();

  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(`${baseUrl}/?q=striped`);
  report.phone = await phone.evaluate(() => ({
    overflows: document.documentElement.scrollWidth > window.innerWidth,
    cards: document.querySelectorAll(".results .card").length,
    searchBoxWidth: document.querySelector('input[name="q"]').getBoundingClientRect().width,
    filtersVisible: Boolean(document.querySelector("aside.filters").offsetParent),
  }));
  await shot(phone, "4-phone");
} catch (error) {
  report.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
