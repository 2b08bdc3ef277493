// Opens an infrastructure twin's page in headless Chromium (playwright-core):
// it shows the twin's services, faults and assertions as GET
// /v1/infra/twins/{id} gives them, and follows the twin as it steps.
//
//   node tests/browser/infra_view.cjs URL TOKEN TWIN [SCREENSHOT.png]
"use strict";
const { launch, run } = require("./chromium.cjs");

const [url, token, twin, screenshot] = process.argv.slice(2);
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
    const before = await api("GET", `/v1/infra/twins/${encodeURIComponent(twin)}`);
    await page.goto(`${url}/inspector/twins/${encodeURIComponent(twin)}#token=${encodeURIComponent(token)}`);
    await page.waitForFunction(
      (t) => window.hanzoTwinView && window.hanzoTwinView.infrastructure && window.hanzoTwinView.infrastructure.time === t,
      before.time, { timeout: 20000 });
    // One row per service, with the node's figures.
    const rows = await page.$$eval("#services tr", (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    if (rows.length !== before.report.services.length) throw new Error(`${rows.length} rows for ${before.report.services.length} services`);
    for (const s of before.report.services) {
      const row = rows.find((r) => r[0] === s.name);
      if (!row) throw new Error(`no row for ${s.name}`);
      if (row[2] !== String(s.arrivals) || row[4] !== String(s.failed)) throw new Error(`${s.name}: shown ${row}, the node says ${s.arrivals} arrivals, ${s.failed} failed`);
    }
    const verdicts = await page.$$eval("#verdicts li", (lis) => lis.map((li) => li.textContent));
    for (const v of before.verdicts) {
      const shown = verdicts.find((text) => text.includes(v.assertion));
      if (!shown || !shown.startsWith(v.passed ? "PASS" : "FAIL")) throw new Error(`${v.assertion}: shown ${shown}`);
    }
    console.log(`the page shows ${rows.length} services and ${verdicts.length} verdicts as the node gives them at ${before.time} s`);
    // It follows the twin.
    await api("POST", `/v1/twins/${encodeURIComponent(twin)}/step`, { steps: 30 });
    await page.waitForFunction(
      (t) => window.hanzoTwinView.infrastructure.time === t, before.time + 30, { timeout: 20000 });
    console.log(`and follows it to ${before.time + 30} s`);
    if (screenshot) await page.screenshot({ path: screenshot });
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  } finally {
    await browser.close();
  }
}

run(main);
