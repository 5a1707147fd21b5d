#!/usr/bin/env bash
# Runs every check and test of neuralrg, installing what they need first (idempotent):
# formatting; the release build (the same build as the README's first command, in ./target);
# clippy -D warnings on every native target; the native tests (CPU backend, and the wgpu backend
# on software Vulkan); then the browser app: trunk build, wasm32 tests in headless Chromium with
# WebGPU, and the end-to-end tests of the built site with Playwright (clippy lints the app and
# the library for wasm32 while they compile there). Ends with a table of the steps' times.
#
#   bash tests/run.sh
#
# Everything builds into ./target with the release profile, so `cargo run --release -p core
# --bin train` before or after reuses the same artifacts ($CARGO_TARGET_DIR is honoured).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
target="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target"
log="$target/neuralrg-test.log"
: > "$log"

start=$(date +%s)
broken=()
times=()
step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }
run() { # run NAME COMMAND...: a failing step is recorded and the next one still runs.
  local name=$1 t0
  shift
  t0=$(date +%s)
  "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || broken+=("$name")
  times+=("$name $(( $(date +%s) - t0 ))")
}

step "toolchain and tools"
t0=$(date +%s)
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo --version
bash tests/install-tools.sh || { echo "installing the tools failed"; exit 1; }
times+=("tools $(( $(date +%s) - t0 ))")

step "format"
run format cargo fmt --all -- --check

step "native build (release: the library, the binaries and the test programs)"
run build cargo test --release --no-run

step "clippy -D warnings (every native target)"
run clippy cargo clippy --release --all-targets -- -D warnings

step "native tests"
# The Vulkan agreement test must run here (lavapipe), not skip.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
run tests env NEURALRG_REQUIRE_VULKAN=1 cargo test --release --no-fail-fast

step "browser app (clippy on the app and the library for wasm32)"
run web bash tests/web.sh

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "| step | seconds |"
echo "|---|---|"
for t in "${times[@]}"; do echo "| ${t% *} | ${t##* } |"; done
grep -E '^   web: (wasm build|wasm tests|end-to-end) took' "$log" | sed 's/^   web: /    /'
echo
if [ ${#broken[@]} -eq 0 ]; then
  echo "all checks passed in $(( $(date +%s) - start )) s"
else
  echo "FAILED steps: ${broken[*]} ($(( $(date +%s) - start )) s)"
fi
echo "tests: $passed passed, $failed failed"
[ ${#broken[@]} -eq 0 ]
