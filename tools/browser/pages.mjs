// Under the Content-Security-Policy, do the admin, the Swagger UI and the shop still work?
// Signs in to the admin, opens its pages, the API docs and a search, and records every
// policy violation the browser reports. Prints one JSON report for test_csp_browser.py.
// Usage: node pages.mjs BASE_URL USERNAME PASSWORD IMPORT_JOB_ID
import { launch, watchViolations } from "./browser.mjs";

const [baseUrl, username, password, importJobId] = process.argv.slice(2);
const browser = await launch();
const report = { violations: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  await watchViolations(page, report.violations);
  const visit = async (path) => {
    const response = await page.goto(baseUrl + path);
    await page.waitForLoadState("load");
    return response.status();
  };

  await visit("/admin/login/");
  await page.fill("#id_username", username);
  await page.fill("#id_password", password);
  await Promise.all([page.waitForURL(/\/admin\/$/), page.click('input[type="submit"]')]);
  report.adminHome = (await page.textContent("#site-name")).trim();

  // A change list (the admin's own inline <style>, its filter script) and an add form
  // (inline formsets added by the admin's scripts).
  report.productList = await visit("/admin/catalog/product/?q=striped");
  report.productAdd = await visit("/admin/catalog/product/add/");
  await page.click("#images-group .add-row a");
  report.imageForms = await page.locator('#images-group tr[id^="images-"]:not(#images-empty)').count();

  // The import page's progress poll: the one inline script, allowed by its nonce.
  const poll = page.waitForRequest((r) => r.url().includes(`/api/imports/${importJobId}/`));
  report.importPage = await visit(`/admin/catalog/importjob/${importJobId}/change/`);
  report.importPolled = Boolean(await poll);

  // Swagger UI: its start-up script is a file; the operations come from the schema.
  report.docs = await visit("/api/docs/");
  await page.waitForSelector(".opblock", { timeout: 30_000 });
  report.operations = await page.locator(".opblock").count();

  // The shop page: its styles are inline in a <style> block.
  report.shop = await visit("/?q=striped");
  report.headerBackground = await page.evaluate(
    () => getComputedStyle(document.querySelector("header")).backgroundColor,
  );
  report.cards = await page.locator(".results .card").count();
} catch (error) {
  report.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
