//! Chooses the component the library carries (`TENANT_CACHE_COMPONENT`):
//! the shipped one, `component/tenant-cache.wasm`, so that a dependent
//! builds with any toolchain and no `wasm32-wasip2` target; or, with the
//! `rebuild-component` feature (contributors, the test suite), the one
//! `guest/` builds now, with a nested cargo.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let component = component(&manifest_dir);
    println!("cargo:rustc-env=TENANT_CACHE_COMPONENT={}", component.display());
}

#[cfg(not(feature = "rebuild-component"))]
fn component(manifest_dir: &std::path::Path) -> PathBuf {
    let shipped = manifest_dir.join("component/tenant-cache.wasm");
    println!("cargo:rerun-if-changed={}", shipped.display());
    shipped
}

#[cfg(feature = "rebuild-component")]
fn component(manifest_dir: &std::path::Path) -> PathBuf {
    use tenant_cache_component_build::{build_component, rerun_if_changed};
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace");
    assert!(
        workspace.join("guest").is_dir(),
        "the rebuild-component feature builds the component from guest/, which only this crate's repository has"
    );
    rerun_if_changed(workspace, &["guest", "wit"]);
    build_component("tenant-cache-guest", workspace, &out_dir)
}
