// What the browser scripts share: Debian's Chromium, started headless the way this machine
// allows; screenshots when asked for; the pages' Content-Security-Policy violations.
import { chromium } from "playwright-core";

export const launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });

// SCREENSHOTS=folder keeps a picture of each step, to look at by eye; unset, none is taken.
export const screenshotter = (prefix) => async (page, name) =>
  process.env.SCREENSHOTS &&
  page.screenshot({ path: `${process.env.SCREENSHOTS}/${prefix}${name}.png`, fullPage: true });

// Every violation on every page of `page` goes into `violations`: the event fires in the
// page, before any of its scripts run.
export async function watchViolations(page, violations) {
  await page.exposeFunction("reportViolation", (v) => violations.push(v));
  await page.addInitScript(() =>
    document.addEventListener("securitypolicyviolation", (e) =>
      window.reportViolation({
        page: location.pathname,
        directive: e.effectiveDirective,
        blocked: e.blockedURI,
        sample: e.sample,
      }),
    ),
  );
}
