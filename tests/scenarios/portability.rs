//! The component imports only the memcached capability (no WASI at all) and
//! exports the tenant-cache interface and `wasi:keyvalue` store and batch
//! (`@0.2.0-draft` and `@0.2.0-draft2`),
//! as the README says: the capability is all a platform must provide.

use wasmtime::Engine;
use wasmtime::component::Component;

#[test]
fn the_component_imports_only_the_capability() -> anyhow::Result<()> {
    let engine = Engine::default();
    let component = Component::new(&engine, tenant_cache_host::COMPONENT)?;
    let ty = component.component_type();
    let imports: Vec<&str> = ty.imports(&engine).map(|(name, _)| name).collect();
    let mut exports: Vec<&str> = ty.exports(&engine).map(|(name, _)| name).collect();
    exports.sort();
    assert_eq!(imports, ["tenant-cache:cache/memcached@0.6.0"]);
    assert_eq!(
        exports,
        [
            "tenant-cache:cache/tenant-cache@0.6.0",
            "wasi:keyvalue/atomics@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft2",
            "wasi:keyvalue/batch@0.2.0-draft",
            "wasi:keyvalue/batch@0.2.0-draft2",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/store@0.2.0-draft2",
        ]
    );
    Ok(())
}

/// The component the host crate ships (`host/component/tenant-cache.wasm`,
/// what dependents build with) is the one `guest/` builds: the test suite
/// builds the host with `rebuild-component`, so `COMPONENT` is the rebuilt
/// one here. After a change to `guest/` or `wit/`, run the tests with
/// `TENANT_CACHE_REFRESH_COMPONENT=1` once to replace the shipped file.
#[test]
fn the_shipped_component_is_the_one_guest_builds() -> anyhow::Result<()> {
    let shipped_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/component/tenant-cache.wasm");
    let shipped = std::fs::read(&shipped_path)?;
    if shipped != tenant_cache_host::COMPONENT && std::env::var_os("TENANT_CACHE_REFRESH_COMPONENT").is_some() {
        std::fs::write(&shipped_path, tenant_cache_host::COMPONENT)?;
        return Ok(());
    }
    assert!(
        shipped == tenant_cache_host::COMPONENT,
        "host/component/tenant-cache.wasm ({} bytes) is not what guest/ builds ({} bytes): run the tests once with \
         TENANT_CACHE_REFRESH_COMPONENT=1 to replace it, and commit it",
        shipped.len(),
        tenant_cache_host::COMPONENT.len()
    );
    Ok(())
}
