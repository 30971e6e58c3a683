//! Writers that have not seen a tenant yet (a fresh instance per request,
//! say) guess its versions; a guess must never hide an entry another
//! writer already made visible.

use tenant_cache_tests::{MemcachedProcess, backend, cache};

#[test]
fn a_completed_set_stays_visible_while_fresh_instances_write_the_same_key() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    cache(&backend, "app")?.set("T", "k", b"seed", None)?;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let backend = &backend;
                scope.spawn(move || -> anyhow::Result<usize> {
                    let mut misses = 0;
                    for n in 0..300 {
                        // A new instance per request knows no versions.
                        let mut fresh = cache(backend, "app")?;
                        fresh.set("T", "k", format!("{writer}/{n}").as_bytes(), None)?;
                        misses += usize::from(fresh.get("T", "k")?.is_none());
                    }
                    Ok(misses)
                })
            })
            .collect();
        for writer in writers {
            assert_eq!(
                writer.join().expect("writer panicked")?,
                0,
                "a completed set was hidden"
            );
        }
        Ok(())
    })
}
