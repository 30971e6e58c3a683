//! `embed.rs` on tokio: your Engine, your Linker, your store data, and the
//! capability granted with `add_to_linker_async`, so memcached is waited
//! for without blocking a thread; the calls are the `*_async` methods.
//! Run: cargo run --release --example embed_async -- 127.0.0.1:11211
use tenant_cache_host::{Backend, Grant, Plugin, add_to_linker_async};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// Your store data: it holds the grant next to whatever else you keep.
struct MyState {
    grant: Grant,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let memcached = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:11211".into());
    let engine = Engine::default();
    let component = Component::new(&engine, tenant_cache_host::COMPONENT)?;
    let mut linker = Linker::new(&engine);
    add_to_linker_async(&mut linker, |state: &mut MyState| &mut state.grant)?;

    let backend = Backend::memcached(&[memcached], Default::default())?;
    let grant = Grant::new(backend, "my-app");
    let mut store = Store::new(&engine, MyState { grant });
    let cache = Plugin::instantiate_async(&mut store, &component, &linker).await?;

    cache.set_async(&mut store, "Lisboa", "/info", b"2 days", None).await?;
    cache
        .set_async(&mut store, "Barcelona", "/info", b"3 days", Some(60))
        .await?;
    cache.clear_async(&mut store, "Barcelona").await?;
    let lisboa = cache.get_async(&mut store, "Lisboa", "/info").await?;
    let barcelona = cache.get_async(&mut store, "Barcelona", "/info").await?;
    println!("Lisboa: {:?}", lisboa.as_deref().map(String::from_utf8_lossy));
    println!("Barcelona: {:?}", barcelona.as_deref().map(String::from_utf8_lossy));
    Ok(())
}
