// Opens a synced twin's page in headless Chromium (playwright-core): its
// sync panel shows the source connected and the drift the API reports.
//
//   node tests/browser/twin_sync.cjs URL TOKEN TWIN MIN_DRIFT
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, twin, minDrift] = process.argv.slice(2);

async function main() {
  const browser = await launch({ webgl: true });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${url}/inspector/twins/${encodeURIComponent(twin)}#token=${encodeURIComponent(token)}`);
    await page.waitForFunction((min) => {
      const s = window.hanzoTwinView && window.hanzoTwinView.sync;
      return s && s.connected >= 1 && s.drift !== null && s.drift >= min && s.age_ms !== null;
    }, Number(minDrift), { timeout: 30000 });
    const sync = await page.evaluate(() => window.hanzoTwinView.sync);
    console.log(`the sync panel shows ${sync.connected} source connected, drift ${sync.drift.toPrecision(3)}, oldest reading ${sync.age_ms.toFixed(0)} ms`);
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  } finally {
    await browser.close();
  }
}

run(main);
