#!/usr/bin/env bash
# Refreshes the browser libraries the inspector serves from the node itself
# (no CDN): each is a pinned npm release, checked against the registry's
# integrity hash by `npm pack`, copied into api/src/inspector/vendor, and
# recorded in SHA256SUMS, which a test checks the committed files against.
#
#   scripts/vendor-web.sh          # after changing a version below
set -euo pipefail
THREE=0.170.0   # the last release whose three.module.min.js stands alone
UPLOT=1.6.32
D3_HIERARCHY=3.1.2   # the console's supervision graph: its tidy tree layout

repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/api/src/inspector/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "three@$THREE" "uplot@$UPLOT" "d3-hierarchy@$D3_HIERARCHY" >/dev/null
mkdir three uplot d3-hierarchy
tar xzf "three-$THREE.tgz" -C three
tar xzf "uplot-$UPLOT.tgz" -C uplot
tar xzf "d3-hierarchy-$D3_HIERARCHY.tgz" -C d3-hierarchy
rm -rf "$out"
mkdir -p "$out/three/addons/controls" "$out/three/addons/geometries" "$out/three/addons/math" "$out/uplot" "$out/d3-hierarchy"
cp three/package/build/three.module.min.js "$out/three/"
cp three/package/LICENSE "$out/three/LICENSE"
for f in controls/OrbitControls.js geometries/ConvexGeometry.js math/ConvexHull.js; do
  cp "three/package/examples/jsm/$f" "$out/three/addons/$f"
done
cp uplot/package/dist/uPlot.iife.min.js uplot/package/dist/uPlot.min.css "$out/uplot/"
cp uplot/package/LICENSE "$out/uplot/LICENSE"
cp d3-hierarchy/package/dist/d3-hierarchy.min.js d3-hierarchy/package/LICENSE "$out/d3-hierarchy/"
cat > "$out/VERSIONS" <<VERSIONS
three $THREE (npm, MIT)
uplot $UPLOT (npm, MIT)
d3-hierarchy $D3_HIERARCHY (npm, ISC)
VERSIONS
(cd "$out" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS)
echo "vendored three $THREE, uPlot $UPLOT and d3-hierarchy $D3_HIERARCHY into ${out#$repo/}"
