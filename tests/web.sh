#!/usr/bin/env bash
# Builds the browser app with trunk (dist/), runs the library's wasm32 tests in headless
# Chromium (WebGPU against the CPU backend) and the end-to-end tests of the built site with
# Playwright, which open a model trained here natively and read the page's model files with the
# native `sample` (the release build, which tests/run.sh has made by then). Needs the tools of
# tests/install-tools.sh.
#
#   bash tests/web.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${NEURALRG_E2E_OUT:-$PWD/tests/output}"
took() { echo "   web: $1 took $(( $(date +%s) - $2 )) s"; }

# A model trained natively, for the page to open (before the wasm32 settings below, which
# would rebuild the native programs with other flags).
echo "   web: a natively trained model (train, L=8, 10 epochs)"
t0=$(date +%s)
export NEURALRG_BINS="${CARGO_TARGET_DIR:-$PWD/target}/release"
cargo build --release -p core --bin train --bin sample
native=$(mktemp -d)
trap 'rm -rf "$native"' EXIT
export NEURALRG_NATIVE_RUN="$native/run"
"$NEURALRG_BINS/train" -L 8 -T 2.269185314213022 -batch 64 -epochs 10 -savePeriod 10 --skip-hmc \
  --folder "$NEURALRG_NATIVE_RUN" >/dev/null
took "native model" "$t0"
# Clippy (-D warnings) lints the workspace crates while they compile for wasm32
# (clippy-driver as RUSTC_WORKSPACE_WRAPPER, which is what `cargo clippy` does); the trunk build
# and the wasm32 tests share those artifacts. web-env.sh turns it off on Debian's toolchain.
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
source tests/web-env.sh

echo "   web: trunk build --release"
t0=$(date +%s)
trunk build --release
echo "   web: dist/ is $(du -sh dist | cut -f1)"
for wasm in dist/*.wasm; do # the page's, and the model's Web Worker's
  echo "   web: $(basename "$wasm"): $(du -h "$wasm" | cut -f1), $(gzip -c "$wasm" | wc -c | awk '{printf "%.1f MB", $1/1e6}') gzipped"
done
took "wasm build (trunk)" "$t0"

echo "   web: wasm32 tests in headless Chromium (WebGPU)"
t0=$(date +%s)
cargo test --release -p app --target wasm32-unknown-unknown
took "wasm tests (build and run)" "$t0"

echo "   web: end-to-end tests of dist/ (Playwright)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Served under a sub-path, as on any static host: dist/ must use relative URLs only.
site=$(mktemp -d)
ln -s "$PWD/dist" "$site/neuralrg"
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$site" "$native"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/neuralrg/" && break; sleep 0.1; done
t0=$(date +%s)
node tests/e2e.mjs "http://127.0.0.1:$port/neuralrg/" "$out"
took "end-to-end tests" "$t0"
