// Drives the dashboard of a running gamelake in a headless browser and prints what a person
// would see, as JSON, for the Rust e2e test to check.
//
//   node dashboard.cjs chromium|firefox URL SCREENSHOT_DIR
//
// Chromium: Debian's chromium driven by `playwright-core` (executable at $GAMELAKE_TEST_CHROMIUM
// or /usr/bin/chromium). Firefox: Debian's firefox-esr driven by `puppeteer-core` over WebDriver
// BiDi, which stock Firefox speaks (executable at $GAMELAKE_TEST_FIREFOX or /usr/bin/firefox-esr).
// Both packages must be resolvable (NODE_PATH). The steps below use only calls both drivers have
// with the same meaning, plus the small adapter that follows.
"use strict";

const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// A browser kind: opens a page at a size and colour scheme; waits for a page condition.
function driver(kind) {
  if (kind === "chromium") {
    const { chromium } = require("playwright-core");
    let browser = null;
    return {
      async open(width, scheme) {
        browser ??= await chromium.launch({
          executablePath: process.env.GAMELAKE_TEST_CHROMIUM || "/usr/bin/chromium", args: CHROMIUM_ARGS,
        });
        return browser.newPage({ viewport: { width, height: 1000 }, colorScheme: scheme });
      },
      async close(page) { await page.close(); },
      waitFor: (page, fn, timeout) => page.waitForFunction(fn, null, { timeout }),
      async done() { if (browser) await browser.close(); },
    };
  }
  if (kind === "firefox") {
    const puppeteer = require("puppeteer-core");
    // The colour scheme is a browser preference in Firefox: one browser per page.
    const browsers = new Map();
    return {
      async open(width, scheme) {
        const browser = await puppeteer.launch({
          browser: "firefox", headless: true,
          executablePath: process.env.GAMELAKE_TEST_FIREFOX || "/usr/bin/firefox-esr",
          extraPrefsFirefox: { "ui.systemUsesDarkTheme": scheme === "dark" ? 1 : 0 },
        });
        const page = await browser.newPage();
        await page.setViewport({ width, height: 1000 });
        browsers.set(page, browser);
        return page;
      },
      async close(page) { await browsers.get(page).close(); browsers.delete(page); },
      waitFor: (page, fn, timeout) => page.waitForFunction(fn, { timeout }),
      async done() { for (const b of browsers.values()) await b.close(); },
    };
  }
  throw new Error(`unknown browser ${kind}: chromium or firefox`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (page, sel) => page.evaluate((s) => document.querySelector(s).textContent, sel);
// Types a query the way an input event would deliver it.
const fill = (page, sel, value) => page.evaluate(({ sel, value }) => {
  const el = document.querySelector(sel);
  el.value = value;
  el.dispatchEvent(new Event("input", { bubbles: true }));
}, { sel, value });

async function main() {

const [kind, url, shots] = process.argv.slice(2);
const d = driver(kind);
const out = {};
try {
  for (const [name, scheme, width] of [["wide", "light", 1920], ["laptop", "dark", 1280]]) {
    const page = await d.open(width, scheme);
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    await d.waitFor(page, () => document.getElementById("status").textContent === "live", 20000);
    // Wait for traffic to show, then read the rate twice, two seconds apart.
    await d.waitFor(page, () => Number(document.getElementById("k-rate").textContent.replace(/[^0-9.]/g, "")) > 0, 20000);
    const read = () => page.evaluate(() => ({
      rate: document.getElementById("k-rate").textContent,
      latency: document.getElementById("k-lat").textContent,
      ratePath: document.querySelector("#c-rate path")?.getAttribute("d") || "",
      codes: document.querySelectorAll("#t-codes tbody tr").length,
    }));
    const first = await read();
    await sleep(2500);
    const second = await read();
    // The lake figures (tables, KPIs) refresh when a new table appears and every 10 s.
    await d.waitFor(page, () => document.querySelectorAll("#t-tables tbody tr").length > 0, 20000);
    const tables = await page.$$eval("#t-tables tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    const kpis = await page.evaluate(() => ({
      dau: document.getElementById("k-dau").textContent,
      ccu: document.getElementById("k-ccu").textContent,
      revenue: document.getElementById("k-rev").textContent,
    }));
    // The scheduler's catch-up builds at start show in the jobs card.
    await d.waitFor(page, () => [...document.querySelectorAll("#t-jobs tbody tr")].some((r) => r.cells[0].textContent === "dau"), 30000);
    const jobs = await page.$$eval("#t-jobs tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    // Nothing sticks out of the viewport sideways.
    const overflow = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, viewport: window.innerWidth }));
    await page.screenshot({ path: `${shots}/dashboard-${name}.png`, fullPage: true });

    // The SQL page: a query with a category column gets rows and a bar chart; a bad one an error.
    await page.click("#nav-sql");
    await fill(page, "#sql", "SELECT code, count(*) AS n FROM silver.combat GROUP BY code");
    await page.click("#run");
    await d.waitFor(page, () => document.querySelectorAll("#t-sql tbody tr").length > 0 || document.getElementById("sql-error").textContent, 20000);
    const sqlRows = await page.$$eval("#t-sql tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    const bars = await page.$$eval("#c-sql rect", (r) => r.length);
    await page.screenshot({ path: `${shots}/sql-${name}.png`, fullPage: true });
    await fill(page, "#sql", "SELECT nope FROM silver.combat");
    await page.click("#run");
    await d.waitFor(page, () => document.getElementById("sql-error").textContent.length > 0, 20000);
    const sqlError = await text(page, "#sql-error");
    out[name] = { first, second, tables, kpis, jobs, overflow, sqlRows, bars, sqlError, errors };
    await d.close(page);
  }
} finally {
  await d.done();
}
console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
