// Drives the inspector page in headless Chromium (playwright-core): the page
// shows a running twin; the twin's actor is crashed through the API; the page
// shows the failure and the twin back, restarted, under a new actor.
//
//   node tests/browser/inspector.cjs URL TOKEN TWIN_NAME [SCREENSHOT.png]
// HANZO_TWIN_PLAYWRIGHT names the playwright-core module folder;
// HANZO_TWIN_CHROMIUM the browser (default /usr/bin/chromium). With
// HANZO_TWIN_INSPECT_NODE set, the twin runs on that other member: the page
// served by URL's node must show it, and its crash and restart, in that
// member's tree (the fault goes through URL's node, routed to the twin's).
"use strict";
const { chromium } = require(process.env.HANZO_TWIN_PLAYWRIGHT || "playwright-core");

const [url, token, twin, screenshot] = process.argv.slice(2);
const peer = process.env.HANZO_TWIN_INSPECT_NODE;

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.HANZO_TWIN_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Quiet on a closed network: no background fetches, no sync, no updates.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error("page error:", e.message));
    await page.goto(`${url}/inspector#token=${encodeURIComponent(token)}`);
    const scope = peer ? `#peers ul[data-node="${peer}"]` : "#tree";
    const row = `${scope} li.actor[data-kind="twin"][data-name="${twin}"]`;
    await page.waitForSelector(`${row}[data-status="running"][data-restarts="0"]`, { timeout: 20000 });
    await page.waitForSelector('#connection[data-state="live"]');
    // The token left the address bar.
    if (page.url().includes("token")) throw new Error(`token still in the address: ${page.url()}`);
    const before = await page.getAttribute(row, "data-actor-id");
    console.log(`page shows ${twin} running as actor ${before}`);
    if (!peer) {
      // Its figures: uptime and mean handling time once it has handled a message.
      await fetch(`${url}/v1/twins/${twin}/step`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ steps: 1 }),
      });
      await page.waitForFunction(
        (sel) => /handling [0-9]+ µs/.test(document.querySelector(sel)?.textContent || "")
          && /up [0-9]/.test(document.querySelector(sel).textContent), `${row} .meta`, { timeout: 20000 });
    }

    const response = await fetch(`${url}/v1/twins/${twin}/faults`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ fault: "panic" }),
    });
    if (!response.ok && response.status !== 503) {
      throw new Error(`fault injection answered ${response.status}: ${await response.text()}`);
    }

    if (!peer) {
      // The event list is this node's own.
      await page.waitForSelector(`#events li[data-event="failed"][data-name="${twin}"]`, { timeout: 20000 });
      await page.waitForSelector(`#events li[data-event="restarted"][data-name="${twin}"]`, { timeout: 20000 });
    }
    await page.waitForSelector(`${row}[data-status="running"][data-restarts="1"]`, { timeout: 20000 });
    const after = await page.getAttribute(row, "data-actor-id");
    if (!after || after === before) throw new Error(`the restarted twin kept actor ${before}`);
    console.log(`page shows the failure, then ${twin} running again as actor ${after} (1 restart)`);
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
