#!/usr/bin/env bash
# Runs every check and test of neuralrg, installing what they need first (idempotent).
#
#   bash tests/run.sh
#
# One cargo target directory outside the checkout ($CARGO_TARGET_DIR, default
# ~/.cache/neuralrg/target) is reused across runs; everything builds with the release profile
# once (clippy's check build aside).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neuralrg/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }
start=$(date +%s)

step "toolchain"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo --version

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

step "tests"
log="$CARGO_TARGET_DIR/neuralrg-test.log"
cargo test --release --workspace 2>&1 | tee "$log"
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')

echo
echo "all checks passed in $(( $(date +%s) - start )) s"
echo "tests: $passed passed, $failed failed"
