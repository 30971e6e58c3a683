//! `Runtime` on tokio: the same calls, awaited, and memcached waited for
//! without blocking a thread.
//! Run: cargo run --release --example runtime_async -- 127.0.0.1:11211
use std::convert::Infallible;

use tenant_cache_host::{Backend, Grant, LeaseOptions, Runtime};

/// What the cache stands in front of: a slow database, say.
async fn render_from_database(city: &str) -> Result<Vec<u8>, Infallible> {
    Ok(format!("{city}: 2 days").into_bytes())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let memcached = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:11211".into());
    let backend = Backend::memcached(&[memcached], Default::default())?;
    let runtime = Runtime::new()?;
    let mut cache = runtime.instantiate_async(Grant::new(backend, "shop")).await?;

    cache.set("Lisboa", "/info", b"2 days", Some(300)).await?;
    assert_eq!(cache.get("Lisboa", "/info").await?.as_deref(), Some(&b"2 days"[..]));
    cache.clear("Lisboa").await?;
    assert_eq!(cache.get("Lisboa", "/info").await?, None);

    // The closure returns a future of `Result<Vec<u8>, E>`.
    let options = LeaseOptions::default();
    let page = cache
        .get_or_compute("Lisboa", "/page", Some(300), &options, || {
            render_from_database("Lisboa")
        })
        .await?;
    println!("{}", String::from_utf8_lossy(&page));
    Ok(())
}
