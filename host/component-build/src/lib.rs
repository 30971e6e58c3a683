//! Builds a workspace package as a `wasm32-wasip2` component from a build
//! script, so that `cargo build`, `cargo run` and `cargo test` need no
//! manual step (the pattern of wasmtime's `test-programs` artifacts).
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `package` of the workspace at `workspace` in release mode for
/// `wasm32-wasip2` and returns the path of the component. The nested cargo
/// gets its own target directory under `out_dir`: sharing the outer one
/// would wait forever on the outer build's lock. Panics (failing the build
/// script) if the build fails.
pub fn build_component(package: &str, workspace: &Path, out_dir: &Path) -> PathBuf {
    let mut built = build_components(&[package], workspace, out_dir);
    built.remove(0)
}

/// [`build_component`] for several packages, in one nested cargo (their
/// shared dependencies built once): their components, in order.
pub fn build_components(packages: &[&str], workspace: &Path, out_dir: &Path) -> Vec<PathBuf> {
    let target_dir = out_dir.join("wasm-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(packages.iter().flat_map(|package| ["-p", package]))
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the outer (native) build must not leak into the
    // wasm build: clippy's wrapper, coverage or sanitizer flags, ...
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        build.env_remove(var);
    }
    // The same bytes wherever the repository and cargo's registry sit:
    // source paths end up in the component (panic locations), so they are
    // written relative to fixed roots. The shipped component is checked
    // against a rebuild, byte for byte.
    build.env("CARGO_ENCODED_RUSTFLAGS", remapped_paths(workspace));
    let status = build.status().expect("running cargo to build a component");
    assert!(
        status.success(),
        "building the {} component failed (see the output above)",
        packages.join(", ")
    );
    let release = target_dir.join("wasm32-wasip2/release");
    packages
        .iter()
        .map(|package| {
            // A library (cdylib) is named with underscores, a binary as it is.
            let library = release.join(format!("{}.wasm", package.replace('-', "_")));
            let component = match library.exists() {
                true => library,
                false => release.join(format!("{package}.wasm")),
            };
            assert!(
                component.exists(),
                "the {package} build produced no {}",
                component.display()
            );
            component
        })
        .collect()
}

/// rustc flags (`CARGO_ENCODED_RUSTFLAGS`) that write the paths of the
/// workspace's and the registry's sources relative to fixed roots.
fn remapped_paths(workspace: &Path) -> String {
    let mut flags = vec![format!("--remap-path-prefix={}=/tenant-cache", workspace.display())];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(cargo_home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", cargo_home.display()));
    }
    flags.join("\u{1f}")
}

/// Tells cargo to run the build script again when any of `paths` (relative
/// to `workspace`) changes.
pub fn rerun_if_changed(workspace: &Path, paths: &[&str]) {
    for path in paths {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
}
