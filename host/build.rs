//! Builds the guest component for `wasm32-wasip2` so that `cargo run` and
//! `cargo test` need no manual step, and exposes its path as
//! `TENANT_CACHE_COMPONENT`.

use std::env;
use std::path::PathBuf;

include!("wasm_build.rs");

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace");
    for watched in ["guest/src", "guest/Cargo.toml", "wit", "host/wasm_build.rs"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    let component = build_component("tenant-cache-guest", workspace, &out_dir);
    println!("cargo:rustc-env=TENANT_CACHE_COMPONENT={}", component.display());
}
