#!/usr/bin/env bash
# Runs every check and test of neuralrg, installing what they need first (idempotent):
# formatting; the native tests (CPU backends, and the wgpu backend on software Vulkan); then the
# browser app: trunk build, wasm32 tests in headless Chromium with WebGPU, and the end-to-end
# tests of the built site with Playwright. Clippy (-D warnings) lints every workspace crate while
# it is compiled for the tests (clippy-driver as RUSTC_WORKSPACE_WRAPPER, which is what
# `cargo clippy` does), so there is no separate check build.
#
#   bash tests/run.sh
#
# Cargo target directories live outside the checkout (~/.cache/neuralrg/target natively,
# ~/.cache/neuralrg/target-wasm for wasm32) and are reused across runs; each builds with the
# release profile once.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neuralrg/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"
log="$CARGO_TARGET_DIR/neuralrg-test.log"
: > "$log"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }
start=$(date +%s)
broken=()
run() { # run NAME COMMAND...: a failing step is recorded and the next one still runs.
  local name=$1
  shift
  "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || broken+=("$name")
}

step "toolchain and tools"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo --version
bash tests/install-tools.sh || { echo "installing the tools failed"; exit 1; }

step "format"
run format cargo fmt --all -- --check

# Lint while compiling (all targets of the workspace crates: libraries, binaries, tests).
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

step "tests (native; clippy on core)"
# The Vulkan agreement test must run here (lavapipe), not skip.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
run tests env NEURALRG_REQUIRE_VULKAN=1 cargo test --release --no-fail-fast

step "browser app (clippy on app and core for wasm32)"
run web bash tests/web.sh

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
if [ ${#broken[@]} -eq 0 ]; then
  echo "all checks passed in $(( $(date +%s) - start )) s"
else
  echo "FAILED steps: ${broken[*]} ($(( $(date +%s) - start )) s)"
fi
echo "tests: $passed passed, $failed failed"
[ ${#broken[@]} -eq 0 ]
