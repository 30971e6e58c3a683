//! docs/semantics.md, guarantee 10: values come back byte for byte
//! whatever their size (up to the item size limit) and however their bytes
//! arrive, through the blocking and the tokio driver alike.

use std::time::Duration;

use tenant_cache_host::{AsyncTenantCache, Backend, Grant, MemcachedOptions, TenantCache};
use tenant_cache_tests::{Behaviour, FakeServer, MemcachedProcess, runtime};

const MIB: usize = 1024 * 1024;

/// Bytes that differ with `seed` everywhere, none of them zero: a value
/// whose tail was zero-filled, or came from another round, never matches.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 255) as u8 + 1
        })
        .collect()
}

/// memcached with 4 MiB items, and a backend on `address` that knows it.
fn large_items() -> anyhow::Result<MemcachedProcess> {
    MemcachedProcess::start_with(&["-I", "4m", "-m", "512"])
}

fn backend_on(address: String, timeout: Duration) -> anyhow::Result<Backend> {
    Backend::memcached(
        &[address],
        MemcachedOptions {
            timeout,
            item_size_limit: 4 * MIB as u64,
            ..MemcachedOptions::default()
        },
    )
}

/// The sizes each round stores and reads: a megabyte, and the largest
/// value a 4 MiB item holds with its key and header.
const SIZES: [usize; 2] = [1_000_000, 4 * MIB - 4096];

fn sync_rounds(cache: &mut TenantCache, rounds: u64) -> anyhow::Result<()> {
    for round in 0..rounds {
        for (n, len) in SIZES.into_iter().enumerate() {
            let value = pattern(round * 10 + n as u64, len);
            cache.set("t", &format!("v{n}"), &value, None)?;
            let read = cache.get("t", &format!("v{n}"))?.expect("just stored");
            assert!(read == value, "round {round}: {len} bytes came back wrong");
        }
    }
    Ok(())
}

async fn async_rounds(cache: &mut AsyncTenantCache, tenant: &str, rounds: u64) -> anyhow::Result<()> {
    for round in 0..rounds {
        for (n, len) in SIZES.into_iter().enumerate() {
            let value = pattern(round * 10 + n as u64, len);
            cache.set(tenant, &format!("v{n}"), &value, None).await?;
            let read = cache.get(tenant, &format!("v{n}")).await?.expect("just stored");
            assert!(read == value, "{tenant} round {round}: {len} bytes came back wrong");
        }
    }
    Ok(())
}

#[test]
fn megabyte_values_come_back_byte_for_byte_through_the_blocking_driver() -> anyhow::Result<()> {
    let server = large_items()?;
    let backend = backend_on(server.address(), Duration::from_secs(5))?;
    sync_rounds(&mut runtime().instantiate(Grant::new(backend, "app"))?, 20)
}

#[test]
fn megabyte_values_come_back_byte_for_byte_through_the_tokio_driver() -> anyhow::Result<()> {
    let server = large_items()?;
    let backend = backend_on(server.address(), Duration::from_secs(5))?;
    // Four tasks at once on two threads, each with its own tenant.
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    threads.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let mut cache = runtime().instantiate_async(Grant::new(backend, "app")).await?;
                    async_rounds(&mut cache, &format!("t{task}"), 10).await
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })
}

#[test]
fn values_arriving_a_few_bytes_at_a_time_come_back_whole() -> anyhow::Result<()> {
    let server = large_items()?;
    let trickle = FakeServer::start(Behaviour::Trickle {
        upstream: server.address(),
        largest: 7,
    })?;
    // A slow network: give each exchange the time its bytes take.
    let backend = backend_on(trickle.address(), Duration::from_secs(60))?;
    let value = pattern(7, 300_000);
    let mut cache = runtime().instantiate(Grant::new(backend.clone(), "app"))?;
    cache.set("t", "k", &value, None)?;
    for _ in 0..2 {
        assert!(cache.get("t", "k")?.expect("stored") == value, "blocking driver");
    }
    let keys: Vec<String> = (0..50).map(|n| format!("small{n}")).collect();
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), pattern(key.len() as u64, 100)))
        .collect();
    cache.set_many("t", &entries, None)?;
    let expected: Vec<Option<Vec<u8>>> = entries.iter().map(|(_, value)| Some(value.clone())).collect();
    assert_eq!(cache.get_many("t", &keys)?, expected, "blocking driver");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut cache = runtime().instantiate_async(Grant::new(backend, "app")).await?;
            for _ in 0..2 {
                assert!(cache.get("t", "k").await?.expect("stored") == value, "tokio driver");
            }
            assert_eq!(cache.get_many("t", &keys).await?, expected, "tokio driver");
            anyhow::Ok(())
        })
}

/// 2 000 values of 4 KB among 60 000 keys that are absent: one batch of
/// 60 002 commands whose replies are mostly short lines.
fn many_keys() -> (Vec<String>, Vec<(String, Vec<u8>)>) {
    let keys: Vec<String> = (0..62_000).map(|n| format!("k{n}")).collect();
    let present = keys
        .iter()
        .step_by(31)
        .map(|key| {
            (
                key.clone(),
                pattern(key.len() as u64 * 7919 + key.as_bytes()[1] as u64, 4000),
            )
        })
        .collect();
    (keys, present)
}

fn expected(keys: &[String], present: &[(String, Vec<u8>)]) -> Vec<Option<Vec<u8>>> {
    keys.iter()
        .map(|key| {
            present
                .iter()
                .find(|(stored, _)| stored == key)
                .map(|(_, value)| value.clone())
        })
        .collect()
}

#[test]
fn a_get_many_of_thousands_of_values_among_misses_reads_every_one_on_both_drivers() -> anyhow::Result<()> {
    let server = large_items()?;
    let backend = backend_on(server.address(), Duration::from_secs(10))?;
    let (keys, present) = many_keys();
    let mut cache = runtime().instantiate(Grant::new(backend.clone(), "app"))?;
    for chunk in present.chunks(500) {
        cache.set_many("t", chunk, None)?;
    }
    let expected = expected(&keys, &present);
    for round in 0..5 {
        assert!(
            cache.get_many("t", &keys)? == expected,
            "blocking driver, round {round}"
        );
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut cache = runtime().instantiate_async(Grant::new(backend, "app")).await?;
            for round in 0..5 {
                assert!(
                    cache.get_many("t", &keys).await? == expected,
                    "tokio driver, round {round}"
                );
            }
            anyhow::Ok(())
        })
}
