#!/usr/bin/env bash
# Runs every test of tenant-cache on a fresh machine: installs what is
# missing (memcached, faketime, the pinned toolchain with its wasm32-wasip2
# target), then the whole test suite, clippy and the format check.
set -euo pipefail
cd "$(dirname "$0")/.."

# memcached for the tests to start; faketime moves a process's clock
# (the TTL tests set entries as if it were 2031 or 2039).
missing=""
command -v memcached >/dev/null || missing="$missing memcached"
command -v faketime >/dev/null || missing="$missing faketime"
if [ -n "$missing" ]; then
    echo "== installing$missing"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq $missing >/dev/null
fi

echo "== installing the toolchain of rust-toolchain.toml"
# rustup does not install the toolchain a rust-toolchain.toml names on its
# own; with no arguments this installs it, its components and targets.
rustup toolchain install

# The stock wasmtime CLI, at the version the host links, for the tests of
# the standalone component (`wasmtime run` and `wasmtime serve`): only the
# features those need, its compiler built with less optimisation as ours
# is (a few minutes on two cores, once per machine).
wasmtime_version=50.0.1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "$(wasmtime --version 2>/dev/null | cut -d' ' -f2)" != "$wasmtime_version" ]; then
    echo "== installing the wasmtime CLI $wasmtime_version"
    cargo install --locked --force --quiet "wasmtime-cli@$wasmtime_version" --no-default-features \
        --features run,serve,cranelift,component-model,component-model-async,parallel-compilation,pooling-allocator \
        --config 'profile.release.package.cranelift-codegen.opt-level=1' \
        --config 'profile.release.package.cranelift-assembler-x64.opt-level=1' \
        --config 'profile.release.package.wasmtime-internal-cranelift.opt-level=1'
fi

echo "== format"
cargo fmt --all --check

echo "== tests (guest unit tests, host unit tests, CLI and component tests)"
cargo test --release --workspace

echo "== packaging (the host crate as a registry ships it, built outside the workspace without wasm32-wasip2)"
./tests/package.sh

echo "== clippy (host, tests, and the guest for wasm32-wasip2)"
cargo clippy --release --workspace --all-targets -- -D warnings
cargo clippy --release --target wasm32-wasip2 -p tenant-cache-guest -p tenant-cache-guest-runtime \
    -p tenant-cache-layout -p tenant-cache-misbehaving -- -D warnings
# The test apps use wit-bindgen with std: checked apart, so that feature
# does not reach the no_std components above.
cargo clippy --release --target wasm32-wasip2 -p tenant-cache-kv-app -p tenant-cache-kv-atomics-app \
    -p tenant-cache-kv-draft2-app -p tenant-cache-hostile-app -p visits -p http-app \
    -p tenant-cache-memcached-provider -- -D warnings
echo "== docs (every public item of the host library documented, links valid)"
RUSTDOCFLAGS="-D warnings" cargo doc --release -p tenant-cache-host --no-deps --quiet
echo "== all checks passed"
