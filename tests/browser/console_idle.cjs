// Opens the operations console in headless Chromium and keeps it open, as
// an operator would leave it (benches/console_cost.rs measures the node
// meanwhile). Prints "ready" once every twin's row has arrived, then stays
// until killed.
//
//   node tests/browser/console_idle.cjs URL TOKEN COUNT
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, count] = process.argv.slice(2);

async function main() {
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${url}/inspector#token=${encodeURIComponent(token)}`);
  await page.waitForFunction((n) => window.hanzoConsole && window.hanzoConsole.rows() >= n + 2, Number(count), { timeout: 120000 });
  console.log("ready");
  // Until the bench ends it.
  await new Promise(() => {});
}

run(main);
