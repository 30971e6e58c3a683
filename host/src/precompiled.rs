//! Compiling the component, and keeping the result on disk so that a
//! second process start skips compilation (~0.3 ms to load instead of
//! ~100 ms to compile).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiles a component from its bytes.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .context("compiling the component")
}

/// Where the artifact for `bytes` compiled by `engine` lives: keyed by the
/// component's SHA-256 and by the engine's compatibility hash (wasmtime
/// version and every setting that changes the machine code).
fn artifact(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let component = crate::digest::short_digest(bytes);
    // A collision here is harmless: wasmtime re-checks compatibility on load.
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!("{component}-{:016x}.cwasm", hasher.finish()))
}

/// Loads the compiled component from `dir`, or compiles it and stores the
/// result there. The cache is only an optimisation: a cache that cannot be
/// read or written falls back to compiling.
pub(crate) fn load(engine: &Engine, bytes: &[u8], dir: &Path) -> anyhow::Result<Component> {
    let path = artifact(engine, bytes, dir);
    if path.exists() {
        // SAFETY: `deserialize_file` trusts the file to be wasmtime's own
        // output. It is: only `store` below writes into this directory, and
        // it renames complete files into place, so a half-written artifact
        // is never read. wasmtime still checks the engine compatibility.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok(component);
        }
    }
    let component = compile(engine, bytes)?;
    store(&component, &path);
    Ok(component)
}

fn store(component: &Component, path: &Path) {
    let Ok(serialized) = component.serialize() else { return };
    let Some(dir) = path.parent() else { return };
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&temporary, serialized))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
}
