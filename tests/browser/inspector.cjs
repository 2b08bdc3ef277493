// Drives the inspector page in headless Chromium (playwright-core): the page
// shows a running twin (found with the search box: the list draws only the
// rows in sight); the twin's actor is crashed through the API; the page
// shows the failure and the twin back, restarted, under a new actor, and
// the failure and restart on the twin's timeline. On this node it also
// checks that the node's steps chart moves while the twin runs.
//
//   node tests/browser/inspector.cjs URL TOKEN TWIN_NAME [SCREENSHOT.png]
// With HANZO_TWIN_INSPECT_NODE set, the twin runs on that other member: the page
// served by URL's node must show it, and its crash and restart, in that
// member's tree (the fault goes through URL's node, routed to the twin's).
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, twin, screenshot] = process.argv.slice(2);
const peer = process.env.HANZO_TWIN_INSPECT_NODE;

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error("page error:", e.message));
    await page.goto(`${url}/inspector#token=${encodeURIComponent(token)}`);
    const row = `#tree .row[data-kind="twin"][data-name="${twin}"]` + (peer ? `[data-node="${peer}"]` : "");
    await page.fill("#search", twin);
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
          && /up [0-9]/.test(document.querySelector(sel).textContent)
          && /mailbox [0-9]+/.test(document.querySelector(sel).textContent), `${row} .meta`, { timeout: 20000 });
      // The node's steps chart moves while the twin runs.
      await fetch(`${url}/v1/twins/${twin}/clock`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ clock: "realtime" }),
      });
      await page.waitForFunction(() => window.hanzoConsole.last && window.hanzoConsole.last.steps_per_s > 0
        && window.hanzoConsole.points >= 2, null, { timeout: 20000 });
      const moving = await page.evaluate(() => window.hanzoConsole.last);
      console.log(`the steps chart moves: ${moving.steps_per_s.toFixed(0)} steps/s, ${moving.active_simulations} active simulations`);
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
    // The twin's detail: its restart timeline, failure then restart.
    await page.click(`${row} .kind`);
    await page.waitForSelector('#timeline li[data-event="failed"] ~ li[data-event="restarted"]', { timeout: 20000 });
    const timeline = await page.$$eval("#timeline li", (lis) => lis.map((li) => li.textContent));
    console.log(`its timeline: ${timeline.join("; ")}`);
    await page.fill("#search", "");
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    if (!peer) {
      // The same tree as a node-link graph: the cluster at its root, a link
      // per actor, the twin with its restart; a click shows its detail, and
      // a node's circle folds its children away.
      await page.click("#view");
      const gnode = `#graph .gnode[data-kind="twin"][data-name="${twin}"]`;
      await page.waitForSelector(`${gnode}[data-status="running"][data-restarts="1"]`, { timeout: 20000 });
      const shape = await page.evaluate(() => ({ ...window.hanzoConsole.graph(), shown: window.hanzoConsole.shown() }));
      if (shape.links !== shape.nodes - 1 || shape.nodes !== shape.shown + 1) {
        throw new Error(`the graph is not the tree's rows: ${JSON.stringify(shape)}`);
      }
      await page.click(`${gnode} text`);
      await page.waitForFunction((t) => document.querySelector("#detail h3")?.textContent === `twin ${t}`, twin, { timeout: 20000 });
      if (screenshot) await page.screenshot({ path: screenshot.replace(/\.png$/, "-graph.png"), fullPage: true });
      await page.click('#graph .gnode[data-kind="host"] circle');
      await page.waitForSelector('#graph .gnode[data-kind="host"][data-folded="true"]', { timeout: 20000 });
      if (await page.$(gnode)) throw new Error("folding the host left its twin in the graph");
      console.log(`graph view: ${shape.nodes} nodes, ${shape.links} links; a click shows the twin; folding the host hides its twins`);
    }
  } finally {
    await browser.close();
  }
}

run(main);
