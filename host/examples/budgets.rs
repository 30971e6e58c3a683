//! A platform's share for one customer: a grant bound to the tenant, with
//! budgets. The tenant writes 100 KB values until its write budget refuses
//! one, and is told which budget and when to retry.
//! Run: cargo run --release --example budgets -- 127.0.0.1:11211
use tenant_cache_host::{Backend, Budgets, CacheError, Grant, Limit, Rate, Runtime};

fn main() -> anyhow::Result<()> {
    let server = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:11211".into());
    let backend = Backend::memcached(&[server], Default::default())?;
    let grant = Grant::new(backend, "shop").bound_to("acme").with_budgets(Budgets {
        bytes_written: Some(Rate {
            per_second: 2 << 20,
            burst: 4 << 20,
        }),
        commands: Some(Rate {
            per_second: 5000,
            burst: 10_000,
        }),
        max_ttl: Some(3600),
    });
    let mut cache = Runtime::new()?.instantiate(grant)?;
    let value = vec![0; 100 * 1024];
    for n in 0.. {
        match cache.set("acme", &format!("/{n}"), &value, None) {
            Ok(()) => {}
            Err(error @ CacheError::OverLimit(Limit::Budget(_))) => {
                println!("{n} values stored, then: {error}");
                break;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}
