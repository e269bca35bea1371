// The first ten minutes, in pictures: the home page, a phone's results, a photo search, a
// product page and the admin's report pages, each saved as a screenshot in SHOTS_DIR and
// measured where a shopper or a merchandiser would look.
// Usage: node storefront.mjs BASE_URL PHOTO_PATH SHOTS_DIR RUN_ID
// (admin user "admin", password "admin-pass"). Prints one JSON report for
// test_storefront_browser.py to check.
import { launch } from "./browser.mjs";

const [baseUrl, photoPath, shots, runId] = process.argv.slice(2);
const browser = await launch();
const report = {};
// What the screen shows first (the viewport), or the whole page.
const shot = (page, name, fullPage = false) => page.screenshot({ path: `${shots}/${name}.png`, fullPage });
const box = (page, selector) =>
  page.$eval(selector, (el) => {
    const r = el.getBoundingClientRect();
    return { top: r.top, bottom: r.bottom, width: r.width, height: r.height };
  });
try {
  const desk = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  desk.setDefaultTimeout(30_000);

  await desk.goto(baseUrl);
  report.home = {
    categories: await desk.$$eval(".category-tiles a", (tiles) =>
      tiles.map((a) => a.textContent.replace(/\s+/g, " ").trim()),
    ),
    heading: (await desk.textContent("#home-products-heading")).trim(),
    cards: await desk.locator(".home-products .card").count(),
    imagesLoaded: await desk.$$eval(".home-products .card img", (imgs) => imgs.every((i) => i.complete && i.naturalWidth > 0)),
    firstCard: await box(desk, ".home-products .card"),
    viewport: 900,
  };
  await shot(desk, "home");

  await Promise.all([desk.waitForURL(/category=/), desk.click(".category-tiles a")]);
  report.category = (await desk.textContent(".results .summary")).trim();
  report.filtersOpenWide = await desk.$eval("#filters", (d) => d.open);
  await shot(desk, "category");

  await desk.goto(baseUrl);
  await desk.setInputFiles("#photo-input", photoPath);
  await Promise.all([desk.waitForURL(/photo=/), desk.click('form.photo button[type="submit"]')]);
  await desk.waitForLoadState("load");
  report.photo = {
    loaded: await desk.$eval("#searched-photo img", (img) => img.complete && img.naturalWidth > 0),
    photo: await box(desk, "#searched-photo img"),
    firstCard: await box(desk, ".results .card"),
  };
  await shot(desk, "photo-search");

  await Promise.all([desk.waitForURL(/products\/\d+/), desk.click(".results .card a")]);
  await desk.waitForLoadState("load");
  report.product = { photo: await box(desk, ".product-photos .main") };
  await shot(desk, "product");

  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(`${baseUrl}/?q=striped`);
  report.phone = {
    viewport: 844,
    firstCard: await box(phone, ".results .card"),
    filtersOpen: await phone.$eval("#filters", (d) => d.open),
    overflows: await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth),
  };
  await shot(phone, "phone-results");
  await phone.click("#filters summary");
  report.phone.filtersOpenAfterTap = await phone.$eval("#filters", (d) => d.open);
  await shot(phone, "phone-filters");

  // The admin: sign in, then the spaces list, a fine-tune run's report and Search insights.
  await desk.goto(`${baseUrl}/admin/login/?next=/admin/`);
  await desk.fill("#id_username", "admin");
  await desk.fill("#id_password", "admin-pass");
  await Promise.all([desk.waitForURL(/\/admin\/$/), desk.click('input[type="submit"]')]);

  await desk.goto(`${baseUrl}/admin/embeddings/embeddingspace/`);
  report.spaces = await desk.evaluate(() => ({
    width: document.documentElement.scrollWidth,
    // The list scrolls inside its box rather than widen the page: a cut-off column.
    cut: (({ scrollWidth, clientWidth }) => scrollWidth > clientWidth + 1)(
      document.querySelector("#changelist .results"),
    ),
    headers: [...document.querySelectorAll("#result_list thead th")].map((th) => {
      const text = th.querySelector(".text") || th;
      return { text: th.textContent.trim(), cut: text.scrollWidth > text.clientWidth + 1 };
    }),
  }));
  await shot(desk, "admin-spaces");

  await desk.goto(`${baseUrl}/admin/embeddings/finetunerun/${runId}/change/`);
  report.run = await desk.evaluate(() => ({
    gates: [...document.querySelectorAll("table.gates tr")].map((tr) =>
      [...tr.children].map((cell) => cell.textContent.trim()),
    ),
    headers: [...document.querySelectorAll(".field-outcome table thead th")].map((th) => th.textContent.trim()),
    options: [...document.querySelectorAll("table.options tr")].map((tr) =>
      [...tr.children].map((cell) => cell.textContent.trim()).join(": "),
    ),
    text: document.querySelector("#content").innerText,
    width: document.documentElement.scrollWidth,
  }));
  await shot(desk, "admin-finetune-run", true);

  await desk.goto(`${baseUrl}/admin/search/searchlog/insights/`);
  report.insights = {
    start: await desk.inputValue("#id_start"),
    end: await desk.inputValue("#id_end"),
    summary: (await desk.textContent("#insights-summary")).replace(/\s+/g, " ").trim(),
    themes: await desk.$$eval("#zero-result-clusters tr.cluster", (rows) =>
      rows.map((row) => row.querySelector(".cluster-queries").textContent.trim()),
    ),
  };
  await shot(desk, "admin-insights", true);
} catch (error) {
  report.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
