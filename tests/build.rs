//! Builds the test-only components under `components/` and exposes their
//! paths (`MISBEHAVING_COMPONENT`). They are never shipped.

use std::env;
use std::path::PathBuf;

use tenant_cache_component_build::{build_component, rerun_if_changed};

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("tests/ sits in the workspace");
    rerun_if_changed(workspace, &["tests/components", "guest/runtime", "wit"]);
    let component = build_component("tenant-cache-misbehaving", workspace, &out_dir);
    println!("cargo:rustc-env=MISBEHAVING_COMPONENT={}", component.display());
}
