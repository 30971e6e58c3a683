//! Builds the guest component for `wasm32-wasip2` so that `cargo run` and
//! `cargo test` need no manual step, and exposes its path as
//! `TENANT_CACHE_COMPONENT`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace");
    let guest = workspace.join("guest");
    for watched in [guest.join("src"), guest.join("Cargo.toml"), workspace.join("wit")] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    // A nested cargo with its own target directory: sharing the outer one
    // would wait forever on the outer build's lock.
    let target_dir = out_dir.join("guest-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "tenant-cache-guest",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the outer (native) build must not leak into the
    // wasm build: clippy's wrapper, coverage or sanitizer flags, ...
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("running cargo to build the guest component");
    assert!(
        status.success(),
        "building the guest component failed (see the output above)"
    );

    let component = target_dir.join("wasm32-wasip2/release/tenant_cache_guest.wasm");
    assert!(
        component.exists(),
        "the guest build produced no {}",
        component.display()
    );
    println!("cargo:rustc-env=TENANT_CACHE_COMPONENT={}", component.display());
}
