# Sourced by the scripts that build the browser app: the wasm32 toolchain and the web tools.
# rustup's wasm32 target where it is installed (tests/install-tools.sh adds it when it can);
# otherwise Debian's rustc-web, which builds std from source (-Zbuild-std).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$root/tests/node_modules/.bin:${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin:$HOME/.cargo/bin:$PATH"
# The wasm32 build shares ./target with the native one (its artifacts go to
# target/wasm32-unknown-unknown; host build scripts and proc-macros are shared).
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
  export RUSTUP_TOOLCHAIN=/usr RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    CARGO_UNSTABLE_BUILD_STD=std,panic_abort \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-22/bin/wasm-ld
  # rustup's clippy-driver does not match Debian's compiler: no lints on this path.
  unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
fi
# wasm-bindgen-test: run the tests in headless Chromium through chromedriver, with WebGPU.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER=/usr/bin/chromedriver
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$root/tests/webdriver.json"
export WASM_BINDGEN_TEST_TIMEOUT=600
