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
    let component = tenant_cache_memcached::digest::short_digest(bytes);
    // A collision here is harmless: wasmtime re-checks compatibility on load.
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!("{component}-{:016x}.cwasm", hasher.finish()))
}

/// Loads the compiled component from `dir`, or compiles it and stores the
/// result there. A cache that cannot be read or written falls back to
/// compiling; a directory other users could write to is refused, since
/// loading a compiled component runs its code.
pub(crate) fn load(engine: &Engine, bytes: &[u8], dir: &Path) -> anyhow::Result<Component> {
    let trusted = trusted_dir(dir)?;
    let path = artifact(engine, bytes, dir);
    if trusted.is_some() && owned_by_us(&path) {
        // SAFETY: `deserialize_file` trusts the file to be wasmtime's own
        // output. It is: the directory and the file belong to this user and
        // nobody else can write there; only `store` below writes into it,
        // and it renames complete files into place, so a half-written
        // artifact is never read. wasmtime still checks the engine
        // compatibility.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok(component);
        }
    }
    let component = compile(engine, bytes)?;
    if trusted.is_some() {
        store(&component, &path);
    }
    Ok(component)
}

/// Makes sure `dir` exists, belongs to this user and no one else can write
/// to it; `Ok(None)` if it cannot be created (the cache is skipped).
fn trusted_dir(dir: &Path) -> anyhow::Result<Option<()>> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .is_err()
    {
        return Ok(None);
    }
    let metadata = std::fs::metadata(dir)?;
    let ours = metadata.uid() == rustix::process::geteuid().as_raw();
    if !ours || metadata.mode() & 0o022 != 0 {
        anyhow::bail!(
            "the component cache directory {} {}: loading compiled code from it would run what others put there; \
             make it yours alone (chmod go-w), choose another (--cache-dir), or skip the cache (--no-cache)",
            dir.display(),
            if ours {
                "can be written by other users"
            } else {
                "belongs to another user"
            }
        );
    }
    Ok(Some(()))
}

/// Whether the file at `path` exists and belongs to this user.
fn owned_by_us(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.uid() == rustix::process::geteuid().as_raw())
}

/// Writes the compiled component under an unpredictable temporary name,
/// then renames it into place.
fn store(component: &Component, path: &Path) {
    let (Ok(serialized), Some(dir)) = (component.serialize(), path.parent()) else {
        return;
    };
    if let Ok(mut temporary) = tempfile::NamedTempFile::new_in(dir) {
        use std::io::Write;
        if temporary.write_all(&serialized).is_ok() {
            let _ = temporary.persist(path);
        }
    }
}
