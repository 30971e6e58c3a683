//! Coalescing: concurrent async calls bound for one server share its
//! connection, their batches written together and their replies read in
//! order. Each caller still gets exactly its own answers: with hundreds
//! of tasks on two executor threads, with callers giving up mid-exchange,
//! with a server killed under them, and with replies trickling in pieces.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tenant_cache_host::{AsyncTenantCache, Backend, CacheError, Grant};
use tenant_cache_tests::{Behaviour, FakeServer, MemcachedProcess, backend, backend_with_timeout, runtime};

/// Two executor threads: the machine's cores.
fn two_threads() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn instance(backend: &Backend) -> anyhow::Result<AsyncTenantCache> {
    runtime().instantiate_async(Grant::new(backend.clone(), "app")).await
}

/// memcached's count of connections it has accepted.
fn connections_accepted(server: &MemcachedProcess) -> anyhow::Result<u64> {
    let stats = server.raw("stats\r\n")?;
    let line = stats
        .lines()
        .find_map(|line| line.strip_prefix("STAT total_connections "))
        .ok_or_else(|| anyhow::anyhow!("no total_connections in {stats}"))?;
    Ok(line.trim().parse()?)
}

/// A small deterministic generator, one per task.
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What a tenant's keys may hold: every value a get may see for each key
/// (more than one after a write whose caller gave up on it).
#[derive(Default)]
struct Model(BTreeMap<String, BTreeSet<Option<Vec<u8>>>>);

impl Model {
    fn may_hold(&self, key: &str) -> BTreeSet<Option<Vec<u8>>> {
        self.0.get(key).cloned().unwrap_or_else(|| BTreeSet::from([None]))
    }

    fn wrote(&mut self, key: &str, value: Option<Vec<u8>>, surely: bool) {
        let mut possible = match surely {
            true => BTreeSet::new(),
            false => self.may_hold(key),
        };
        possible.insert(value);
        self.0.insert(key.to_owned(), possible);
    }

    fn check(&self, tenant: &str, key: &str, got: &Option<Vec<u8>>) {
        let possible = self.may_hold(key);
        assert!(
            possible.contains(got),
            "{tenant}/{key}: got {:?}, may hold {:?}",
            got.as_deref().map(String::from_utf8_lossy),
            possible
                .iter()
                .map(|value| value.as_deref().map(String::from_utf8_lossy))
                .collect::<Vec<_>>()
        );
    }
}

/// The keys a workload uses.
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// One tenant's calls: sets, gets, get-many, set-many, deletes and clears
/// in a random order, every value unique to the tenant and the step (a
/// reply meant for another caller could not pass for it). `give_up`: the
/// chance in 100 that a call is abandoned after a random 0–3 ms; its
/// instance is then replaced. `size`: how long values are.
async fn workload(
    backend: Backend,
    tenant: String,
    steps: usize,
    give_up: u64,
    size: usize,
    done: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let mut cache = instance(&backend).await?;
    let mut model = Model::default();
    let mut rng = Steps(0x9e37_79b9_7f4a_7c15 ^ (tenant.len() as u64 * 0x1000_0001) ^ hash(&tenant));
    for step in 0..steps {
        let key = KEYS[rng.next(4) as usize];
        let mut value = format!("{tenant}:{step}:").into_bytes();
        value.resize(value.len() + rng.next(size as u64 + 1) as usize, b'.');
        let abandon = rng.next(100) < give_up;
        let within = Duration::from_micros(rng.next(3000));
        let kind = rng.next(10);
        let call = async {
            match kind {
                0..=2 => cache.set(&tenant, key, &value, None).await.map(|()| None),
                3..=5 => cache.get(&tenant, key).await.map(|got| Some(vec![(key, got)])),
                6 => {
                    let keys: Vec<String> = KEYS.iter().map(|key| key.to_string()).collect();
                    let got = cache.get_many(&tenant, &keys).await?;
                    Ok(Some(KEYS.iter().copied().zip(got).collect()))
                }
                7 => {
                    let entries = vec![(key.to_owned(), value.clone()), ("k3".to_owned(), value.clone())];
                    cache.set_many(&tenant, &entries, None).await.map(|()| None)
                }
                8 => cache.delete(&tenant, key).await.map(|()| None),
                _ => cache.clear(&tenant).await.map(|()| None),
            }
        };
        let outcome = match abandon {
            true => tokio::time::timeout(within, call).await.ok(),
            false => Some(call.await),
        };
        let surely = outcome.is_some();
        match outcome {
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(Some(reads))) => {
                for (key, got) in reads {
                    model.check(&tenant, key, &got);
                }
            }
            Some(Ok(None)) | None => {}
        }
        if !surely {
            // The store may hold a call dropped mid-way: a new instance.
            cache = instance(&backend).await?;
        }
        match kind {
            0..=2 => model.wrote(key, Some(value), surely),
            7 => {
                model.wrote(key, Some(value.clone()), surely);
                model.wrote("k3", Some(value), surely);
            }
            8 => model.wrote(key, None, surely),
            9 => {
                for key in KEYS {
                    model.wrote(key, None, surely);
                }
            }
            _ => {}
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `tasks` workloads at once on two executor threads, all within a
/// minute (nothing may hang).
fn run_workloads(
    backend: &Backend,
    tasks: usize,
    steps: usize,
    give_up: u64,
    size: usize,
) -> anyhow::Result<Vec<anyhow::Result<()>>> {
    let done = Arc::new(AtomicUsize::new(0));
    two_threads()?.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|n| {
                tokio::spawn(workload(
                    backend.clone(),
                    format!("t{n}"),
                    steps,
                    give_up,
                    size,
                    done.clone(),
                ))
            })
            .collect();
        let all = futures_join(handles);
        let results = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .map_err(|_| anyhow::anyhow!("the workloads did not finish within a minute"))?;
        Ok(results)
    })
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) -> Vec<anyhow::Result<()>> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap_or_else(|error| Err(error.into())));
    }
    results
}

#[test]
fn hundreds_of_concurrent_async_calls_each_get_their_own_answers_on_shared_connections() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let backend = backend(&[&a, &b])?;
    let accepted = connections_accepted(&a)? + connections_accepted(&b)?;
    for result in run_workloads(&backend, 256, 40, 0, 64)? {
        result?;
    }
    // Two `stats` of this test, and the batches of 256 tasks went over
    // one connection per server.
    let opened = connections_accepted(&a)? + connections_accepted(&b)? - accepted - 2;
    assert!(opened <= 2, "{opened} connections for 256 tasks");
    Ok(())
}

#[test]
fn callers_giving_up_mid_exchange_never_get_or_cause_a_wrong_answer() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    // Replies in pieces of 1 to 64 bytes: exchanges take long enough for
    // callers to give up in the middle of them.
    let proxy = FakeServer::start(Behaviour::Trickle {
        upstream: server.address(),
        largest: 64,
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_secs(5))?;
    for result in run_workloads(&backend, 64, 30, 30, 200)? {
        result?;
    }
    Ok(())
}

#[test]
fn replies_trickling_in_pieces_of_one_to_seven_bytes_reach_their_callers() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let proxy = FakeServer::start(Behaviour::Trickle {
        upstream: server.address(),
        largest: 7,
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_secs(10))?;
    for result in run_workloads(&backend, 32, 15, 0, 300)? {
        result?;
    }
    Ok(())
}

#[test]
fn a_server_killed_mid_run_fails_only_the_calls_bound_for_it() -> anyhow::Result<()> {
    let (live, mut killed) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let backend = backend_with_timeout(&[live.address(), killed.address()], Duration::from_millis(500))?;
    let tenants: Vec<String> = (0..64).map(|n| format!("t{n}")).collect();
    two_threads()?.block_on(async {
        let mut cache = instance(&backend).await?;
        for tenant in &tenants {
            cache.set(tenant, "k0", b"first", None).await?;
        }
        anyhow::Ok(())
    })?;
    let on_live: BTreeSet<String> = tenants
        .iter()
        .filter(|tenant| matches!(live.raw_get(&format!("tc:app:n:{tenant}")), Ok(Some(_))))
        .cloned()
        .collect();
    assert!(
        !on_live.is_empty() && on_live.len() < tenants.len(),
        "tenants on both servers"
    );
    // Kill the second server once the workloads are well under way.
    let done = Arc::new(AtomicUsize::new(0));
    let killer = {
        let done = done.clone();
        std::thread::spawn(move || {
            while done.load(Ordering::Relaxed) < 1000 {
                std::thread::sleep(Duration::from_millis(1));
            }
            killed.kill();
            killed
        })
    };
    let results = two_threads()?.block_on(async {
        let handles: Vec<_> = tenants
            .iter()
            .map(|tenant| {
                let (backend, tenant, done) = (backend.clone(), tenant.clone(), done.clone());
                tokio::spawn(async move {
                    let mut cache = instance(&backend).await?;
                    let (mut served, mut failed) = (0, 0);
                    let mut value = b"first".to_vec();
                    for step in 0..80 {
                        let result = match step % 2 {
                            0 => cache.get(&tenant, "k0").await.map(|got| {
                                assert_eq!(got.as_deref(), Some(&value[..]), "{tenant} step {step}");
                            }),
                            _ => {
                                let next = format!("{tenant}:{step}").into_bytes();
                                let result = cache.set(&tenant, "k0", &next, None).await;
                                if result.is_ok() {
                                    value = next;
                                }
                                result
                            }
                        };
                        match result {
                            Ok(()) => served += 1,
                            Err(CacheError::Unavailable(_)) => {
                                failed += 1;
                                // Nothing more is known of a failed set.
                                break;
                            }
                            Err(other) => anyhow::bail!("{tenant}: {other}"),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                    anyhow::Ok((tenant, served, failed))
                })
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await??);
        }
        anyhow::Ok(results)
    })?;
    let _killed = killer.join().expect("the killer thread");
    let mut failures_elsewhere = 0;
    for (tenant, served, failed) in &results {
        match on_live.contains(tenant) {
            true => assert_eq!((served, failed), (&80, &0), "{tenant} lives on the server that stayed"),
            false => failures_elsewhere += failed,
        }
    }
    assert!(failures_elsewhere > 0, "the killed server's tenants saw it go");
    Ok(())
}

#[test]
fn a_restarted_server_serves_the_next_async_call() -> anyhow::Result<()> {
    let mut server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let workers = two_threads()?;
    workers.block_on(async {
        let mut cache = instance(&backend).await?;
        cache.set("acme", "k", b"v", None).await?;
        anyhow::Ok(())
    })?;
    for _ in 0..3 {
        server.restart()?;
        workers.block_on(async {
            let mut cache = instance(&backend).await?;
            // The shared connection the server closed is not used again.
            assert_eq!(cache.get("acme", "k").await?, None);
            cache.set("acme", "k", b"v", None).await?;
            anyhow::Ok(())
        })?;
    }
    Ok(())
}
