#!/usr/bin/env bash
# Checks that a platform can adopt the host crate as a registry would ship
# it: packages `tenant-cache-host` and the crates it needs, then builds and
# runs a small program depending on the packaged crate, in a project outside
# this workspace, with a toolchain that has no wasm32-wasip2 target (the
# crate carries the component; nothing is compiled to wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The component travels in the package, built from guest/ of this very
# commit (the binary's `component` command writes the one it carries); it
# is never committed (untracked, not ignored: cargo packages it), and is
# gone again once packaged.
shipped=host/component/tenant-cache.wasm
scratch=$(mktemp -d)
trap 'rm -rf "$scratch" "$repo/host/component"; rustup toolchain uninstall tenant-cache-no-wasm >/dev/null 2>&1 || true' EXIT
mkdir -p host/component
cargo run --release --quiet -- component -o "$shipped"
cargo package --quiet --no-verify --allow-dirty \
    -p tenant-cache-layout -p tenant-cache-component-build -p tenant-cache-host
packaged=$(tar tzf target/package/tenant-cache-host-*.crate)
if ! grep -q "/component/tenant-cache.wasm$" <<< "$packaged"; then
    echo "package.sh: the packaged host crate does not carry the component" >&2
    exit 1
fi
for crate in target/package/tenant-cache-{layout,component-build,host}-*.crate; do
    tar xzf "$crate" -C "$scratch"
done

# The pinned toolchain without its wasm32-wasip2 target. rustc finds its
# targets next to its driver library, so the binaries and libraries are
# copies (hard links where the file system allows), the targets links.
sysroot=$(rustc --print sysroot)
toolchain="$scratch/toolchain"
mkdir -p "$toolchain/bin" "$toolchain/lib/rustlib"
for file in "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$sysroot"/lib/*; do
    [ -d "$file" ] && continue
    case "$file" in */lib/*) into="$toolchain/lib" ;; *) into="$toolchain/bin" ;; esac
    cp -P -l "$file" "$into/" 2>/dev/null || cp -P "$file" "$into/"
done
for entry in "$sysroot"/lib/rustlib/*; do
    case "$(basename "$entry")" in wasm32-*) ;; *) ln -s "$entry" "$toolchain/lib/rustlib/" ;; esac
done
rustup toolchain link tenant-cache-no-wasm "$toolchain"
if [ -e "$(rustc +tenant-cache-no-wasm --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    echo "package.sh: the scratch toolchain still has wasm32-wasip2" >&2
    exit 1
fi

# A project of a platform's own: one line adopts the crate.
app="$scratch/adopter"
mkdir -p "$app/src"
host=$(basename "$scratch"/tenant-cache-host-*)
layout=$(basename "$scratch"/tenant-cache-layout-*)
build=$(basename "$scratch"/tenant-cache-component-build-*)
cat > "$app/Cargo.toml" <<TOML
[package]
name = "adopter"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
tenant-cache-host = { version = "0.1", default-features = false }
anyhow = "1"

# What a registry would serve: the packaged crates.
[patch.crates-io]
tenant-cache-host = { path = "../$host" }
tenant-cache-layout = { path = "../$layout" }
tenant-cache-component-build = { path = "../$build" }

$(sed -n '/^\[profile/,$p' Cargo.toml)
TOML
cat > "$app/src/main.rs" <<'RUST'
use tenant_cache_host::{Backend, Grant, Runtime};

fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new()?;
    let mut cache = runtime.instantiate(Grant::new(Backend::embedded(), "adopter"))?;
    cache.set("acme", "greeting", b"hello", None)?;
    let greeting = cache.get("acme", "greeting")?.unwrap_or_default();
    cache.increment("acme", "visits", 1)?;
    let visits = cache.increment("acme", "visits", 1)?;
    println!("{} {visits}", String::from_utf8_lossy(&greeting));
    Ok(())
}
RUST
# The same versions as this workspace, so the build can share its
# compiled dependencies.
cp Cargo.lock "$app/"
cd "$app"
out=$(CARGO_TARGET_DIR="$repo/target/adopter" cargo +tenant-cache-no-wasm run --quiet --release)
if [ "$out" != "hello 2" ]; then
    echo "package.sh: the adopter printed '$out', not 'hello 2'" >&2
    exit 1
fi
echo "package.sh: the packaged tenant-cache-host builds and runs outside the workspace, without wasm32-wasip2"
