// Shared by the build scripts of `host/` and `tests/` (through `include!`):
// build one workspace package for `wasm32-wasip2` with a nested cargo.

/// Builds `package` (in `workspace`) as a component and returns its path.
fn build_component(package: &str, workspace: &std::path::Path, out_dir: &std::path::Path) -> std::path::PathBuf {
    use std::process::Command;

    // A nested cargo with its own target directory: sharing the outer one
    // would wait forever on the outer build's lock.
    let target_dir = out_dir.join("wasm-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", package])
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
    let status = build.status().expect("running cargo to build a component");
    assert!(status.success(), "building the {package} component failed (see the output above)");
    let component = target_dir.join(format!("wasm32-wasip2/release/{}.wasm", package.replace('-', "_")));
    assert!(component.exists(), "the {package} build produced no {}", component.display());
    component
}
