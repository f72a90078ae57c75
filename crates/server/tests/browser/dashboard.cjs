// Drives the dashboard of a running gamelake in headless Chromium (playwright-core, Debian's
// chromium) and prints what a person would see, as JSON, for the Rust e2e test to check.
//
//   node dashboard.cjs URL SCREENSHOT_DIR
//
// Needs `playwright-core` resolvable (NODE_PATH) and Chromium at $GAMELAKE_TEST_CHROMIUM or
// /usr/bin/chromium.
"use strict";
const { chromium } = require("playwright-core");

async function main() {

const [url, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.GAMELAKE_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = {};
try {
  for (const [name, scheme, width] of [["wide", "light", 1920], ["laptop", "dark", 1280]]) {
    const page = await browser.newPage({ viewport: { width, height: 1000 }, colorScheme: scheme });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 20000 });
    // Wait for traffic to show, then read the rate twice, two seconds apart.
    await page.waitForFunction(() => Number(document.getElementById("k-rate").textContent.replace(/[^0-9.]/g, "")) > 0, null, { timeout: 20000 });
    const read = () => page.evaluate(() => ({
      rate: document.getElementById("k-rate").textContent,
      latency: document.getElementById("k-lat").textContent,
      ratePath: document.querySelector("#c-rate path")?.getAttribute("d") || "",
      codes: document.querySelectorAll("#t-codes tbody tr").length,
    }));
    const first = await read();
    await page.waitForTimeout(2500);
    const second = await read();
    // The lake figures (tables, KPIs) refresh when a new table appears and every 10 s.
    await page.waitForFunction(() => document.querySelectorAll("#t-tables tbody tr").length > 0, null, { timeout: 20000 });
    const tables = await page.$$eval("#t-tables tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    const kpis = await page.evaluate(() => ({
      dau: document.getElementById("k-dau").textContent,
      ccu: document.getElementById("k-ccu").textContent,
      revenue: document.getElementById("k-rev").textContent,
    }));
    // The scheduler's catch-up builds at start show in the jobs card.
    await page.waitForFunction(() => [...document.querySelectorAll("#t-jobs tbody tr")].some((r) => r.cells[0].textContent === "dau"), null, { timeout: 30000 });
    const jobs = await page.$$eval("#t-jobs tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    await page.screenshot({ path: `${shots}/dashboard-${name}.png`, fullPage: true });

    // The SQL page: a query with a category column gets rows and a bar chart; a bad one an error.
    await page.click("#nav-sql");
    await page.fill("#sql", "SELECT code, count(*) AS n FROM silver.combat GROUP BY code");
    await page.click("#run");
    await page.waitForFunction(() => document.querySelectorAll("#t-sql tbody tr").length > 0 || document.getElementById("sql-error").textContent, null, { timeout: 20000 });
    const sqlRows = await page.$$eval("#t-sql tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    const bars = await page.$$eval("#c-sql rect", (r) => r.length);
    await page.screenshot({ path: `${shots}/sql-${name}.png`, fullPage: true });
    await page.fill("#sql", "SELECT nope FROM silver.combat");
    await page.click("#run");
    await page.waitForFunction(() => document.getElementById("sql-error").textContent.length > 0, null, { timeout: 20000 });
    const sqlError = await page.textContent("#sql-error");
    out[name] = { first, second, tables, kpis, jobs, sqlRows, bars, sqlError, errors };
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
