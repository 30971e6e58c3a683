//! Builds the test-only components under `components/` and exposes their
//! paths (`MISBEHAVING_COMPONENT`). They are never shipped.

use std::env;
use std::path::PathBuf;

include!("../host/wasm_build.rs");

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("tests/ sits in the workspace");
    for watched in [
        "tests/components",
        "guest/src/wasm_runtime.rs",
        "guest/src/small_blocks.rs",
        "wit",
        "host/wasm_build.rs",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    let component = build_component("tenant-cache-misbehaving", workspace, &out_dir);
    println!("cargo:rustc-env=MISBEHAVING_COMPONENT={}", component.display());
}
