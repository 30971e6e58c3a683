//! The shortest way in: `Runtime` compiles the component once, and each
//! `TenantCache` is one contained instance of it (a memory limit, a
//! deadline per call, a fresh instance after a trap).
//! Run: cargo run --release --example runtime -- 127.0.0.1:11211
use std::convert::Infallible;

use tenant_cache_host::{Backend, Grant, LeaseOptions, Runtime};

/// What the cache stands in front of: a slow database, say.
fn render_from_database(city: &str) -> Result<Vec<u8>, Infallible> {
    Ok(format!("{city}: 2 days").into_bytes())
}

fn main() -> anyhow::Result<()> {
    let memcached = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:11211".into());
    let backend = Backend::memcached(&[memcached], Default::default())?;
    let runtime = Runtime::new()?;
    let mut cache = runtime.instantiate(Grant::new(backend, "shop"))?;

    cache.set("Lisboa", "/info", b"2 days", Some(300))?;
    assert_eq!(cache.get("Lisboa", "/info")?.as_deref(), Some(&b"2 days"[..]));
    cache.clear("Lisboa")?; // every entry of Lisboa, at once
    assert_eq!(cache.get("Lisboa", "/info")?, None);

    // On a miss one caller per key computes the value; the others wait for
    // it. The closure returns `Result<Vec<u8>, E>`; a failure comes back as
    // `ComputeError::Compute(E)`, and nothing is stored.
    let page = cache.get_or_compute("Lisboa", "/page", Some(300), &LeaseOptions::default(), || {
        render_from_database("Lisboa") // runs in one caller per key, not in all of them
    })?;
    println!("{}", String::from_utf8_lossy(&page));
    Ok(())
}
