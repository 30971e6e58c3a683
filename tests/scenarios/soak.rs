//! A bounded concurrency soak: 4 threads doing mixed get / set / clear /
//! clear-all on overlapping tenants, and a checker that replays the log.
//! Required: no read returns a value written before a clear of its tenant
//! completed, no clear is lost, no read returns another tenant's value.

use std::collections::HashMap;
use std::time::Instant;

use tenant_cache_host::CacheError;
use tenant_cache_tests::{MemcachedProcess, backend, cache};

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 12_500;
const TENANTS: u64 = 6;
const KEYS: u64 = 4;

/// A clear of one tenant (`None`: clear-all), as it ran.
struct Clear {
    tenant: Option<u64>,
    started: Instant,
    ended: Instant,
}

struct Write {
    started: Instant,
    ended: Instant,
    succeeded: bool,
}

struct Read {
    tenant: u64,
    key: u64,
    started: Instant,
    value: Option<Vec<u8>>,
}

#[derive(Default)]
struct Log {
    clears: Vec<Clear>,
    writes: HashMap<(u64, u64), Write>,
    reads: Vec<Read>,
    contention: usize,
}

/// A small deterministic generator per thread.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn encode(tenant: u64, key: u64, writer: u64, seq: u64) -> Vec<u8> {
    format!("{tenant}/{key}/{writer}/{seq}").into_bytes()
}

fn decode(value: &[u8]) -> Option<[u64; 4]> {
    let text = std::str::from_utf8(value).ok()?;
    let parts: Vec<u64> = text.split('/').map(str::parse).collect::<Result<_, _>>().ok()?;
    parts.try_into().ok()
}

#[test]
fn soak_mixed_operations_on_overlapping_tenants() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let started = Instant::now();
    let logs: Vec<Log> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS as u64)
            .map(|writer| {
                let backend = &backend;
                scope.spawn(move || -> anyhow::Result<Log> {
                    let mut cache = cache(backend, "soak")?;
                    let mut log = Log::default();
                    let mut random = 0x9e37_79b9_7f4a_7c15 ^ (writer + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                    for seq in 0..OPS_PER_THREAD as u64 {
                        let (roll, tenant, key) = (
                            next(&mut random) % 100,
                            next(&mut random) % TENANTS,
                            next(&mut random) % KEYS,
                        );
                        let name = format!("tenant-{tenant}");
                        let began = Instant::now();
                        match roll {
                            0..55 => {
                                let value = cache.get(&name, &format!("k{key}"))?;
                                log.reads.push(Read {
                                    tenant,
                                    key,
                                    started: began,
                                    value,
                                });
                            }
                            55..87 => {
                                let result =
                                    cache.set(&name, &format!("k{key}"), &encode(tenant, key, writer, seq), None);
                                let succeeded = match result {
                                    Ok(()) => true,
                                    Err(CacheError::Contention(_)) => {
                                        log.contention += 1;
                                        false
                                    }
                                    Err(other) => return Err(other.into()),
                                };
                                log.writes.insert(
                                    (writer, seq),
                                    Write {
                                        started: began,
                                        ended: Instant::now(),
                                        succeeded,
                                    },
                                );
                            }
                            87..98 => {
                                cache.clear(&name)?;
                                log.clears.push(Clear {
                                    tenant: Some(tenant),
                                    started: began,
                                    ended: Instant::now(),
                                });
                            }
                            _ => {
                                cache.clear_all()?;
                                log.clears.push(Clear {
                                    tenant: None,
                                    started: began,
                                    ended: Instant::now(),
                                });
                            }
                        }
                    }
                    Ok(log)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("soak thread panicked"))
            .collect::<anyhow::Result<_>>()
    })?;
    let elapsed = started.elapsed();

    let mut writes = HashMap::new();
    let mut clears = Vec::new();
    let mut reads = Vec::new();
    let mut contention = 0;
    for (writer, log) in logs.into_iter().enumerate() {
        for ((_, seq), write) in log.writes {
            writes.insert((writer as u64, seq), write);
        }
        clears.extend(log.clears);
        reads.extend(log.reads);
        contention += log.contention;
    }
    let (mut stale, mut cross_tenant, mut phantom, mut hits) = (0, 0, 0, 0);
    let mut lost_clears = std::collections::BTreeSet::new();
    for read in &reads {
        let Some(value) = &read.value else { continue };
        hits += 1;
        let Some([tenant, key, writer, seq]) = decode(value) else {
            phantom += 1;
            continue;
        };
        if (tenant, key) != (read.tenant, read.key) {
            cross_tenant += 1;
            continue;
        }
        let Some(write) = writes.get(&(writer, seq)) else {
            phantom += 1;
            continue;
        };
        if !write.succeeded {
            phantom += 1;
        }
        // Stale: a clear of this tenant began after the write had finished
        // and finished before the read began.
        for (index, clear) in clears.iter().enumerate() {
            if clear.tenant.is_none_or(|cleared| cleared == read.tenant)
                && clear.started > write.ended
                && clear.ended < read.started
            {
                stale += 1;
                lost_clears.insert(index);
                break;
            }
        }
        let _ = write.started;
    }
    let operations = reads.len() + writes.len() + clears.len();
    eprintln!(
        "soak: {operations} operations in {elapsed:?} ({} reads, {hits} hits, {} writes, {contention} contended, \
         {} clears); stale {stale}, lost clears {}, cross-tenant {cross_tenant}, phantom {phantom}",
        reads.len(),
        writes.len(),
        clears.len(),
        lost_clears.len()
    );
    assert!(operations >= 50_000);
    assert!(hits > 1_000, "too few hits to check anything: {hits}");
    assert_eq!((stale, lost_clears.len(), cross_tenant, phantom), (0, 0, 0, 0));
    Ok(())
}
