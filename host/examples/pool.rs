//! A host serving many concurrent requests: one compiled component, one
//! shared memcached client, and a pool of instances that request threads
//! check out (instances are cheap with the pooling allocator).
//! Run: cargo run --release --example pool -- 127.0.0.1:11211
use std::sync::Mutex;
use std::time::Instant;

use tenant_cache_host::{Backend, Grant, Runtime, RuntimeOptions, TenantCache};

/// Instances waiting for a request; a new one is made when none is free.
struct Instances {
    runtime: Runtime,
    grant: Grant,
    idle: Mutex<Vec<TenantCache>>,
}

impl Instances {
    fn serve<R>(&self, request: impl FnOnce(&mut TenantCache) -> R) -> anyhow::Result<R> {
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut cache = match idle {
            Some(cache) => cache,
            None => self.runtime.instantiate(self.grant.clone())?,
        };
        let response = request(&mut cache);
        self.idle.lock().expect("pool lock").push(cache);
        Ok(response)
    }
}

fn main() -> anyhow::Result<()> {
    let memcached = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:11211".into());
    let backend = Backend::memcached(&[memcached], Default::default())?;
    let runtime = Runtime::from_bytes(
        tenant_cache_host::COMPONENT,
        RuntimeOptions {
            pooling: true,
            ..Default::default()
        },
    )?;
    let instances = Instances {
        runtime,
        grant: Grant::new(backend, "pool-example"),
        idle: Mutex::new(Vec::new()),
    };
    let (threads, requests) = (8, 500);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let instances = &instances;
                scope.spawn(move || -> anyhow::Result<()> {
                    let tenant = format!("tenant-{}", thread % 4);
                    for n in 0..requests {
                        let key = format!("/page/{}", n % 16);
                        instances.serve(|cache| cache.set(&tenant, &key, b"rendered page", Some(300)))??;
                        let page = instances.serve(|cache| cache.get(&tenant, &key))??;
                        anyhow::ensure!(page.is_some(), "{tenant}{key} missing right after it was set");
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("worker panicked"))
    })?;
    let elapsed = started.elapsed();
    let total = threads * requests * 2;
    println!(
        "{total} requests from {threads} threads in {elapsed:.2?} ({:.0}/s), {} instances",
        total as f64 / elapsed.as_secs_f64(),
        instances.idle.lock().expect("pool lock").len()
    );
    Ok(())
}
