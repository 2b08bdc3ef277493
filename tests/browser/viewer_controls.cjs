// Opens a twin's page in headless Chromium (playwright-core) with a
// viewer's token: the controls that need more than reading are disabled and
// say which permission and roles they need; downloading a checkpoint (a
// read) stays on and works.
//
//   node tests/browser/viewer_controls.cjs URL VIEWER_TOKEN TWIN
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, twin] = process.argv.slice(2);

async function main() {
  const browser = await launch({ webgl: true });
  try {
    const context = await browser.newContext({ acceptDownloads: true });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${url}/inspector/twins/${encodeURIComponent(twin)}#token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => window.hanzoTwinView && window.hanzoTwinView.controls, null, { timeout: 20000 });
    const buttons = await page.$$eval("#controls button", (all) => all.map((b) => ({
      action: b.dataset.action, disabled: b.disabled, reason: b.dataset.reason || "",
    })));
    for (const b of buttons) {
      const allowed = b.action === "checkpoint";
      if (b.disabled === allowed) throw new Error(`${b.action} is ${b.disabled ? "disabled" : "enabled"} for a viewer`);
      if (!allowed && !(/needs [a-z_]+:[a-z_]+/.test(b.reason) && b.reason.includes("twin-viewer"))) {
        throw new Error(`${b.action} gives no reason naming the permission and the viewer's role: "${b.reason}"`);
      }
      console.log(`${b.action}: ${b.disabled ? `disabled, ${b.reason}` : "enabled"}`);
    }
    const [download] = await Promise.all([
      page.waitForEvent("download", { timeout: 20000 }),
      page.click('#controls button[data-action="checkpoint"]'),
    ]);
    const path = await download.path();
    const size = require("fs").statSync(path).size;
    if (size === 0) throw new Error("the checkpoint downloaded empty");
    console.log(`the viewer downloaded the checkpoint: ${size} bytes`);
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  } finally {
    await browser.close();
  }
}

run(main);
