// What every browser check shares: Debian's Chromium started headless by
// playwright-core, quiet on a closed network (no background fetches, no
// sync, no updates), with software WebGL (SwiftShader) for the pages that
// draw in 3D; and a main that exits 1 with the error.
//
// HANZO_TWIN_PLAYWRIGHT names the playwright-core module folder;
// HANZO_TWIN_CHROMIUM the browser (default /usr/bin/chromium).
"use strict";
const { chromium } = require(process.env.HANZO_TWIN_PLAYWRIGHT || "playwright-core");

const QUIET = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"];

exports.launch = ({ webgl = false } = {}) => chromium.launch({
  executablePath: process.env.HANZO_TWIN_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: webgl ? [...QUIET, "--use-angle=swiftshader", "--enable-unsafe-swiftshader"] : [...QUIET, "--disable-gpu"],
});

exports.run = (main) => main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
