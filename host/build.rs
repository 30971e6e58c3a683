//! Builds the guest component for `wasm32-wasip2` and exposes its path as
//! `TENANT_CACHE_COMPONENT`.

use std::env;
use std::path::PathBuf;

use tenant_cache_component_build::{build_component, rerun_if_changed};

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace");
    rerun_if_changed(workspace, &["guest", "wit"]);
    let component = build_component("tenant-cache-guest", workspace, &out_dir);
    println!("cargo:rustc-env=TENANT_CACHE_COMPONENT={}", component.display());
}
