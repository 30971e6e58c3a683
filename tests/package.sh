#!/usr/bin/env bash
# Checks that a platform can adopt the host crate as a registry would ship
# it: packages `tenant-cache-host` and the crates it needs, then builds and
# runs a small program depending on the packaged crate, in a project outside
# this workspace, with a toolchain that has no wasm32-wasip2 target (the
# crate carries the component; nothing is compiled to wasm). The project
# depends on wasmtime with its default features, as platforms build it
# (component-model async on), and runs the packaged wasi:keyvalue examples
# (blocking and on tokio) on the README's visits app, and embed_async (the
# capability in the platform's own store, on tokio), against memcached.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The component travels in the package, built from guest/ of this very
# commit (the binary's `component` command writes the one it carries); it
# is never committed (untracked, not ignored: cargo packages it), and is
# gone again once packaged.
shipped=host/component/tenant-cache.wasm
provider=host/component/memcached-provider.wasm
scratch=$(mktemp -d)
memcached_pid=""
trap 'rm -rf "$scratch" "$repo/host/component"; rustup toolchain uninstall tenant-cache-no-wasm >/dev/null 2>&1 || true; [ -z "$memcached_pid" ] || kill "$memcached_pid" 2>/dev/null || true' EXIT
mkdir -p host/component
cargo run --release --quiet -- component -o "$shipped"
cargo run --release --quiet -- component --provider -o "$provider"
cargo package --quiet --no-verify --allow-dirty \
    -p tenant-cache-layout -p tenant-cache-memcached -p tenant-cache-component-build -p tenant-cache-host
packaged=$(tar tzf target/package/tenant-cache-host-*.crate)
for carried in tenant-cache.wasm memcached-provider.wasm; do
    if ! grep -q "/component/$carried$" <<< "$packaged"; then
        echo "package.sh: the packaged host crate does not carry component/$carried" >&2
        exit 1
    fi
done
for crate in target/package/tenant-cache-{layout,memcached,component-build,host}-[0-9]*.crate; do
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
memcached=$(basename "$scratch"/tenant-cache-memcached-[0-9]*)
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
# As platforms build them: default features.
wasmtime = "=50.0.1"
wasmtime-wasi = "=50.0.1"
tokio = { version = "1", features = ["rt-multi-thread", "macros"] }

# What a registry would serve: the packaged crates.
[patch.crates-io]
tenant-cache-host = { path = "../$host" }
tenant-cache-layout = { path = "../$layout" }
tenant-cache-memcached = { path = "../$memcached" }
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
# The packaged wasi:keyvalue examples, as the platform's own programs.
mkdir -p "$app/src/bin"
cp "$scratch/$host/examples/"{keyvalue_sync,keyvalue_async,embed_async}.rs "$app/src/bin/"
# The same versions as this workspace where they overlap.
cp Cargo.lock "$app/"
# The README's visits app (built here, with the workspace's toolchain).
cargo build --release --quiet --target wasm32-wasip2 -p visits
visits="$repo/target/wasm32-wasip2/release/visits.wasm"

# A memcached of its own, on a free loopback port.
for attempt in $(seq 1 20); do
    port=$((20000 + RANDOM % 30000))
    memcached -u root -U 0 -l 127.0.0.1 -p "$port" &
    memcached_pid=$!
    sleep 0.3
    if kill -0 "$memcached_pid" 2>/dev/null; then break; fi
    memcached_pid=""
done
[ -n "$memcached_pid" ] || { echo "package.sh: no memcached could start" >&2; exit 1; }

cd "$app"
export CARGO_TARGET_DIR="$repo/target/adopter"
out=$(cargo +tenant-cache-no-wasm run --quiet --release --bin adopter)
if [ "$out" != "hello 2" ]; then
    echo "package.sh: the adopter printed '$out', not 'hello 2'" >&2
    exit 1
fi
# The app's visits, through both forwarders, bound to its tenant.
cargo +tenant-cache-no-wasm build --quiet --release --bins
expect_visit() {
    local example=$1 tenant=$2 expected=$3 got
    got=$("$CARGO_TARGET_DIR/release/$example" "127.0.0.1:$port" "$visits" "$tenant" ana)
    if [ "$got" != "$expected" ]; then
        echo "package.sh: $example for $tenant printed '$got', not '$expected'" >&2
        exit 1
    fi
}
expect_visit keyvalue_async acme "hello ana, visit 1"
expect_visit keyvalue_sync acme "hello ana, visit 2"
expect_visit keyvalue_async globex "hello ana, visit 1"
expect_visit keyvalue_async acme "hello ana, visit 3"
# The capability in the platform's own store, on tokio.
got=$("$CARGO_TARGET_DIR/release/embed_async" "127.0.0.1:$port")
if [ "$got" != $'Lisboa: Some("2 days")\nBarcelona: None' ]; then
    echo "package.sh: embed_async printed '$got'" >&2
    exit 1
fi
echo "package.sh: the packaged tenant-cache-host builds and runs outside the workspace, without wasm32-wasip2,"
echo "package.sh: and serves wasi:keyvalue blocking and on tokio with a default-features wasmtime"
