//! The components the crate carries: the tenant-cache component
//! (`TENANT_CACHE_COMPONENT`), and for the CLI the memcached provider
//! (`TENANT_CACHE_PROVIDER`, what `tenant-cache component --standalone`
//! composes with it). In this repository they are built from `guest/` and
//! `guest/memcached-provider/`, with one nested cargo for `wasm32-wasip2`.
//! The packaged crate has no `guest/`: it carries the components
//! `tests/package.sh` built from the same commit (`component/*.wasm`), so a
//! dependent builds it with any toolchain and no wasm target.

use std::env;
use std::path::PathBuf;

use tenant_cache_component_build::{build_components, rerun_if_changed};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("a crate sits in a directory");
    let mut wanted = vec![("tenant-cache-guest", "tenant-cache.wasm", "TENANT_CACHE_COMPONENT")];
    if env::var_os("CARGO_FEATURE_CLI").is_some() {
        wanted.push((
            "tenant-cache-memcached-provider",
            "memcached-provider.wasm",
            "TENANT_CACHE_PROVIDER",
        ));
    }
    let components = if workspace.join("guest").is_dir() {
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        rerun_if_changed(workspace, &["guest", "wit", "host/memcached"]);
        let packages: Vec<&str> = wanted.iter().map(|(package, _, _)| *package).collect();
        build_components(&packages, workspace, &out_dir)
    } else {
        let packaged: Vec<PathBuf> = wanted
            .iter()
            .map(|(_, file, _)| manifest_dir.join("component").join(file))
            .collect();
        for file in &packaged {
            println!("cargo:rerun-if-changed={}", file.display());
            assert!(
                file.is_file(),
                "{} is missing: outside its repository the crate needs the components packaged with it",
                file.display()
            );
        }
        packaged
    };
    for ((_, _, variable), component) in wanted.iter().zip(components) {
        println!("cargo:rustc-env={variable}={}", component.display());
    }
}
