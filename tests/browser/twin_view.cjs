// Drives a twin's 3D view in headless Chromium (playwright-core): the view
// draws the running twin's bodies and they move; with the twin paused, every
// body is drawn where `GET /v1/twins/{id}/state` says it is, at the same
// step; its step button steps it; a fork ticked in the list is drawn beside it.
//
//   node tests/browser/twin_view.cjs URL TOKEN TWIN FORK [SCREENSHOT.png]
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, twin, fork, screenshot] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${token}`, "content-type": "application/json" };

async function api(method, path, body) {
  const response = await fetch(`${url}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

async function main() {
  const browser = await launch({ webgl: true });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${url}/inspector/twins/${encodeURIComponent(twin)}#token=${encodeURIComponent(token)}`);
    if (page.url().includes("token")) throw new Error(`token still in the address: ${page.url()}`);
    await page.waitForFunction(() => window.hanzoTwinView && window.hanzoTwinView.ready, null, { timeout: 20000 });
    const drawn = () => page.evaluate(() => window.hanzoTwinView.drawn());
    const first = await drawn();
    const paths = Object.keys(first.bodies);
    if (!paths.length) throw new Error("the view draws no bodies");
    // The running twin moves on screen.
    await page.waitForFunction(
      (step) => window.hanzoTwinView.drawn().step > step + 10, first.step, { timeout: 20000 });
    console.log(`the view draws ${paths.length} bodies and follows the running twin from step ${first.step}`);
    // The step rate shows once a second of steps has come in.
    await page.waitForFunction(() => /^[0-9]+$/.test(document.getElementById("rate").textContent), null, { timeout: 20000 });
    if (screenshot) await page.screenshot({ path: screenshot });

    // Paused, the drawing catches up with the twin and matches its state.
    await api("POST", `/v1/twins/${encodeURIComponent(twin)}/clock`, { clock: "paused" });
    const state = await api("GET", `/v1/twins/${encodeURIComponent(twin)}/state`);
    await page.waitForFunction(
      (step) => window.hanzoTwinView.drawn().step === step, state.step, { timeout: 20000 });
    const now = await drawn();
    let worst = 0;
    for (const body of state.bodies) {
      const at = now.bodies[body.path];
      if (!at) throw new Error(`the view does not draw ${body.path}`);
      for (let k = 0; k < 3; k++) worst = Math.max(worst, Math.abs(at[k] - body.position[k]));
    }
    if (worst > 1e-9) throw new Error(`a body is drawn ${worst} m from where GET /state puts it`);
    console.log(`at step ${state.step} every body is drawn where GET /state puts it (within ${worst.toExponential(1)} m)`);

    // The page's own step control (the admin may use it) goes through the
    // API, and the view follows.
    await page.waitForFunction(() => window.hanzoTwinView.controls, null, { timeout: 20000 });
    await page.fill("#steps", "5");
    await page.click('#controls button[data-action="step"]');
    await page.waitForFunction(() => /^stepped to [0-9]+$/.test(document.getElementById("control-result").textContent), null, { timeout: 20000 });
    const stepped = Number((await page.textContent("#control-result")).split(" ").pop());
    if (stepped !== state.step + 5) throw new Error(`the step button took the twin from ${state.step} to ${stepped}`);
    await page.waitForFunction((s) => window.hanzoTwinView.drawn().step === s, stepped, { timeout: 20000 });
    console.log(`the step button stepped the twin to ${stepped} and the view followed`);

    // The fork, ticked, is drawn beside its parent.
    const box = `#forks input[data-fork="${fork}"]`;
    await page.waitForSelector(box, { timeout: 20000 });
    await page.check(box);
    await page.waitForFunction(
      (id) => { const d = window.hanzoTwinView.drawn(id); return d && d.step !== null; }, fork, { timeout: 20000 });
    console.log("the fork is drawn beside its parent");
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  } finally {
    await browser.close();
  }
}

run(main);
