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
    assert_eq!(imports, ["tenant-cache:cache/memcached@0.8.0"]);
    assert_eq!(
        exports,
        [
            "tenant-cache:cache/tenant-cache@0.8.0",
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
