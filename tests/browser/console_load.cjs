// Opens the operations console on a node with many twins, in headless
// Chromium (playwright-core), and checks that the list stays small in the
// page: only the rows in sight are drawn, scrolling to the end draws the
// last twin, and the search finds one twin with its node and host.
// Prints how long the page took to show every row.
//
//   node tests/browser/console_load.cjs URL TOKEN COUNT LAST_TWIN
// Over https, the node's own certificate is accepted (a test CA).
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, count, last] = process.argv.slice(2);

async function main() {
  const browser = await launch();
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: url.startsWith("https:"), viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const started = Date.now();
    await page.goto(`${url}/inspector#token=${encodeURIComponent(token)}`);
    // Every twin, plus the node and its host.
    await page.waitForFunction((n) => window.hanzoConsole && window.hanzoConsole.rows() >= n + 2, Number(count), { timeout: 60000 });
    const loaded = Date.now() - started;
    if (page.url().includes("token")) throw new Error(`token still in the address: ${page.url()}`);
    const drawn = await page.evaluate(() => window.hanzoConsole.drawn());
    const rows = await page.evaluate(() => window.hanzoConsole.rows());
    if (drawn > 80) throw new Error(`${drawn} rows are in the page for ${rows}: the list is not virtualized`);
    console.log(`the console showed ${rows} rows in ${loaded} ms, ${drawn} of them drawn`);

    // Scrolled to the end, the last twin is drawn.
    await page.evaluate(() => { const t = document.getElementById("tree"); t.scrollTop = t.scrollHeight; });
    await page.waitForSelector(`#tree .row[data-name="${last}"]`, { timeout: 20000 });
    console.log(`scrolled to the end: ${last} is drawn`);

    // The search finds it with its ancestors only.
    await page.fill("#search", last);
    await page.waitForFunction(() => window.hanzoConsole.shown() === 3, null, { timeout: 20000 });
    await page.waitForSelector(`#tree .row[data-name="${last}"]`, { timeout: 20000 });
    // The status filter: every twin is stopped (created, never started).
    await page.fill("#search", "");
    await page.selectOption("#filter-status", "stopped");
    await page.waitForFunction((n) => window.hanzoConsole.shown() === n + 2, Number(count), { timeout: 20000 });
    console.log(`the search finds ${last} under its node and host; the status filter keeps ${count} stopped twins`);
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  } finally {
    await browser.close();
  }
}

run(main);
