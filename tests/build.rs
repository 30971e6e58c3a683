//! Builds the test-only components under `components/` and exposes their
//! paths (`MISBEHAVING_COMPONENT`, `KV_APP_COMPONENT`,
//! `KV_ATOMICS_APP_COMPONENT`, `KV_DRAFT2_APP_COMPONENT`,
//! `HOSTILE_APP_COMPONENT`). They are never shipped.

use std::env;
use std::path::PathBuf;

use tenant_cache_component_build::{build_component, rerun_if_changed};

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("tests/ sits in the workspace");
    rerun_if_changed(workspace, &["tests/components", "guest/runtime", "wit"]);
    for (package, variable) in [
        ("tenant-cache-misbehaving", "MISBEHAVING_COMPONENT"),
        ("tenant-cache-kv-app", "KV_APP_COMPONENT"),
        ("tenant-cache-kv-atomics-app", "KV_ATOMICS_APP_COMPONENT"),
        ("tenant-cache-kv-draft2-app", "KV_DRAFT2_APP_COMPONENT"),
        ("tenant-cache-hostile-app", "HOSTILE_APP_COMPONENT"),
    ] {
        let component = build_component(package, workspace, &out_dir);
        println!("cargo:rustc-env={variable}={}", component.display());
    }
}
