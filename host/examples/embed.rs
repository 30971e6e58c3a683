//! Embedding tenant-cache in your own wasmtime host: your Engine, your
//! Linker, your store data; the capability is granted in one line.
//! Run: cargo run --release --example embed -- 127.0.0.1:11211
use tenant_cache_host::{Backend, Grant, Plugin, add_to_linker};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// Your store data: it holds the grant next to whatever else you keep.
struct MyState {
    grant: Grant,
}

fn main() -> anyhow::Result<()> {
    let memcached = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:11211".into());
    let engine = Engine::default();
    let component = Component::new(&engine, tenant_cache_host::COMPONENT)?;
    let mut linker = Linker::new(&engine);
    add_to_linker(&mut linker, |state: &mut MyState| &mut state.grant)?;

    let backend = Backend::memcached(&[memcached], Default::default())?;
    let grant = Grant::new(backend, "my-app"); // every key lands under this app's prefix
    let mut store = Store::new(&engine, MyState { grant });
    let cache = Plugin::instantiate(&mut store, &component, &linker)?;

    cache.set(&mut store, "Lisboa", "/info", b"2 days", None)?;
    cache.set(&mut store, "Barcelona", "/info", b"3 days", Some(60))?;
    cache.clear(&mut store, "Barcelona")?;
    let lisboa = cache.get(&mut store, "Lisboa", "/info")?;
    let barcelona = cache.get(&mut store, "Barcelona", "/info")?;
    println!("Lisboa: {:?}", lisboa.as_deref().map(String::from_utf8_lossy));
    println!("Barcelona: {:?}", barcelona.as_deref().map(String::from_utf8_lossy));
    Ok(())
}
