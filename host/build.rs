//! The component the library carries (`TENANT_CACHE_COMPONENT`). In this
//! repository it is built from `guest/`, with a nested cargo for
//! `wasm32-wasip2`. The packaged crate has no `guest/`: it carries the
//! component `tests/package.sh` built from the same commit
//! (`component/tenant-cache.wasm`), so a dependent builds it with any
//! toolchain and no wasm target.

use std::env;
use std::path::PathBuf;

use tenant_cache_component_build::{build_component, rerun_if_changed};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("a crate sits in a directory");
    let component = if workspace.join("guest").is_dir() {
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        rerun_if_changed(workspace, &["guest", "wit"]);
        build_component("tenant-cache-guest", workspace, &out_dir)
    } else {
        let packaged = manifest_dir.join("component/tenant-cache.wasm");
        println!("cargo:rerun-if-changed={}", packaged.display());
        assert!(
            packaged.is_file(),
            "{} is missing: outside its repository the crate needs the component packaged with it",
            packaged.display()
        );
        packaged
    };
    println!("cargo:rustc-env=TENANT_CACHE_COMPONENT={}", component.display());
}
