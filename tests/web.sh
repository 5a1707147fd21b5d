#!/usr/bin/env bash
# Builds the browser app with trunk (dist/), runs the library's wasm32 tests in headless
# Chromium (WebGPU against the CPU backend) and the end-to-end tests of the built site with
# Playwright. Needs the tools of tests/install-tools.sh.
#
#   bash tests/web.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/web-env.sh
out="${NEURALRG_E2E_OUT:-$PWD/tests/output}"

echo "   web: trunk build --release"
trunk build --release
wasm=$(ls dist/*.wasm)
echo "   web: dist/ is $(du -sh dist | cut -f1) ($(basename "$wasm"): $(du -h "$wasm" | cut -f1), $(gzip -c "$wasm" | wc -c | awk '{printf "%.1f MB", $1/1e6}') gzipped)"

echo "   web: wasm32 tests in headless Chromium (WebGPU)"
cargo test --release -p app --target wasm32-unknown-unknown

echo "   web: end-to-end tests of dist/ (Playwright)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Served under a sub-path, as on any static host: dist/ must use relative URLs only.
site=$(mktemp -d)
ln -s "$PWD/dist" "$site/neuralrg"
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$site"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/neuralrg/" && break; sleep 0.1; done
node tests/e2e.mjs "http://127.0.0.1:$port/neuralrg/" "$out"
