// The product page's ask box: a question typed under the photo, answered on the page.
// Prints one JSON report for test_ask_browser.py. Usage: node ask.mjs BASE_URL PRODUCT_ID
import { launch, screenshotter, watchViolations } from "./browser.mjs";

const [baseUrl, productId] = process.argv.slice(2);
const shoot = screenshotter("ask-");
const browser = await launch();
const report = { violations: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  await watchViolations(page, report.violations);
  await page.goto(`${baseUrl}/products/${productId}/`);
  const photo = await page.locator(".product-photos img.main").boundingBox();
  const box = await page.locator("form#ask").boundingBox();
  report.underThePhoto = box.y >= photo.y + photo.height && Math.abs(box.x - photo.x) < 2;
  await shoot(page, "1-product");

  for (const [name, question] of [["en", "What colour is this?"], ["zh", "是棉质的吗？"]]) {
    await page.fill("#ask-question", question);
    await Promise.all([page.waitForURL(/\/ask\/#ask$/), page.click("form#ask button")]);
    report[name] = {
      question: await page.inputValue("#ask-question"),
      answer: (await page.textContent("#ask-answer")).trim(),
      confidence: (await page.textContent("#ask-confidence")).trim(),
      lang: await page.getAttribute("#ask-answer", "lang"),
      visible: await page.locator("#ask-answer").isVisible(),
    };
    await shoot(page, `2-answer-${name}`);
  }
} catch (error) {
  report.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
