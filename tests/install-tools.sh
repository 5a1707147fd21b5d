#!/usr/bin/env bash
# Installs what the browser app and its tests need, skipping whatever is already there:
#   - a wasm32 standard library: rustup's target where `rustup target add` works, otherwise
#     Debian's rustc-web (Rust 1.96 with its std source, built with -Zbuild-std) and lld;
#   - trunk and wasm-bindgen-cli (the version of the wasm-bindgen crate in Cargo.lock);
#   - wasm-opt (binaryen 132 from npm) and playwright-core, under tests/node_modules;
#   - Chromium and ChromeDriver (headless, WebGPU on SwiftShader) and Mesa's lavapipe
#     (software Vulkan for the native wgpu tests).
# Prints `export` lines for the environment the web build needs (see web-env.sh).
#
#   bash tests/install-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14
# Tools compile once into their own target directory; opt-level 1 halves their build time and
# is plenty for build tools.
export CARGO_TARGET_DIR="${NEURALRG_TOOLS_TARGET:-$HOME/.cache/neuralrg/tools-target}"
# cargo install puts the tools here; web-env.sh puts it on PATH.
export PATH="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin:$PATH"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false

say() { printf '   install-tools: %s\n' "$*"; }

apt_packages=()
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in chromium chromium-driver mesa-vulkan-drivers; do
  have_deb "$p" || apt_packages+=("$p")
done

# wasm32: rustup's target when it can be had, else Debian's toolchain.
if rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$' \
  || rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
  say "wasm32 through rustup"
else
  for p in rustc-web cargo-web rust-web-src lld-22; do
    have_deb "$p" || apt_packages+=("$p")
  done
fi

if [ ${#apt_packages[@]} -gt 0 ]; then
  say "apt-get install ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
  say "cargo install trunk $TRUNK_VERSION"
  cargo install trunk --version "$TRUNK_VERSION" --locked --quiet
fi

BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $BINDGEN_VERSION" ]; then
  # Not --locked: its lock file pins a webpki-roots release that not every registry mirror has.
  say "cargo install wasm-bindgen-cli $BINDGEN_VERSION"
  cargo install wasm-bindgen-cli --version "$BINDGEN_VERSION" --quiet
fi

if [ ! -x tests/node_modules/.bin/wasm-opt ] || [ ! -d tests/node_modules/playwright-core ]; then
  say "npm ci (binaryen, playwright-core)"
  (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi
say "done"
