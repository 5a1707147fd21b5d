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
cargo test --release --workspace

echo
echo "all checks passed in $(( $(date +%s) - start )) s"
