//! Coalescing: concurrent async calls bound for one server share its
//! connection, their batches written together and their replies read in
//! order. Each caller still gets exactly its own answers: with hundreds
//! of tasks on two executor threads, with callers giving up mid-exchange,
//! with a server killed under them, and with replies trickling in pieces.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tenant_cache_host::{AsyncTenantCache, Backend, CacheError, Grant, TenantCache};
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
    fn for_tenant(tenant: &str) -> Steps {
        Steps(0x9e37_79b9_7f4a_7c15 ^ hash(tenant))
    }

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

/// One call of a workload.
enum Op {
    Set(&'static str, Vec<u8>),
    Get(&'static str),
    GetMany,
    /// The key and `k3`, both to the value.
    SetMany(&'static str, Vec<u8>),
    Delete(&'static str),
    Clear,
}

/// What a call read: each key and its value.
type Reads = Vec<(&'static str, Option<Vec<u8>>)>;

impl Op {
    /// A random call of `tenant`'s `step`: every value unique to the
    /// tenant and the step (a reply meant for another caller could not
    /// pass for it), `size` bytes at most beyond its name.
    fn random(rng: &mut Steps, tenant: &str, step: usize, size: usize) -> Op {
        let key = KEYS[rng.next(4) as usize];
        let mut value = format!("{tenant}:{step}:").into_bytes();
        value.resize(value.len() + rng.next(size as u64 + 1) as usize, b'.');
        match rng.next(10) {
            0..=2 => Op::Set(key, value),
            3..=5 => Op::Get(key),
            6 => Op::GetMany,
            7 => Op::SetMany(key, value),
            8 => Op::Delete(key),
            _ => Op::Clear,
        }
    }

    fn keys() -> Vec<String> {
        KEYS.iter().map(|key| key.to_string()).collect()
    }

    async fn run_async(&self, cache: &mut AsyncTenantCache, tenant: &str) -> Result<Reads, CacheError> {
        match self {
            Op::Set(key, value) => cache.set(tenant, key, value, None).await.map(|()| Vec::new()),
            Op::Get(key) => Ok(vec![(*key, cache.get(tenant, key).await?)]),
            Op::GetMany => Ok(KEYS
                .into_iter()
                .zip(cache.get_many(tenant, &Op::keys()).await?)
                .collect()),
            Op::SetMany(key, value) => {
                let entries = vec![(key.to_string(), value.clone()), ("k3".to_owned(), value.clone())];
                cache.set_many(tenant, &entries, None).await.map(|()| Vec::new())
            }
            Op::Delete(key) => cache.delete(tenant, key).await.map(|()| Vec::new()),
            Op::Clear => cache.clear(tenant).await.map(|()| Vec::new()),
        }
    }

    fn run(&self, cache: &mut TenantCache, tenant: &str) -> Result<Reads, CacheError> {
        match self {
            Op::Set(key, value) => cache.set(tenant, key, value, None).map(|()| Vec::new()),
            Op::Get(key) => Ok(vec![(*key, cache.get(tenant, key)?)]),
            Op::GetMany => Ok(KEYS.into_iter().zip(cache.get_many(tenant, &Op::keys())?).collect()),
            Op::SetMany(key, value) => {
                let entries = vec![(key.to_string(), value.clone()), ("k3".to_owned(), value.clone())];
                cache.set_many(tenant, &entries, None).map(|()| Vec::new())
            }
            Op::Delete(key) => cache.delete(tenant, key).map(|()| Vec::new()),
            Op::Clear => cache.clear(tenant).map(|()| Vec::new()),
        }
    }
}

impl Model {
    /// Checks what a call read, and takes in what it wrote (`surely`:
    /// its caller saw it done; otherwise it may or may not have been).
    fn after(&mut self, tenant: &str, op: Op, reads: &Reads, surely: bool) {
        for (key, got) in reads {
            self.check(tenant, key, got);
        }
        match op {
            Op::Set(key, value) => self.wrote(key, Some(value), surely),
            Op::SetMany(key, value) => {
                self.wrote(key, Some(value.clone()), surely);
                self.wrote("k3", Some(value), surely);
            }
            Op::Delete(key) => self.wrote(key, None, surely),
            Op::Clear => {
                for key in KEYS {
                    self.wrote(key, None, surely);
                }
            }
            Op::Get(_) | Op::GetMany => {}
        }
    }
}

/// One tenant's calls in a random order, each checked against what the
/// tenant may hold. `give_up`: the chance in 100 that a call is abandoned
/// after a random 0–3 ms; its instance is then replaced.
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
    let mut rng = Steps::for_tenant(&tenant);
    for step in 0..steps {
        let op = Op::random(&mut rng, &tenant, step, size);
        let abandon = rng.next(100) < give_up;
        let within = Duration::from_micros(rng.next(3000));
        let outcome = match abandon {
            true => tokio::time::timeout(within, op.run_async(&mut cache, &tenant))
                .await
                .ok(),
            false => Some(op.run_async(&mut cache, &tenant).await),
        };
        let surely = outcome.is_some();
        let reads = outcome.transpose()?.unwrap_or_default();
        if !surely {
            // The store may hold a call dropped mid-way: a new instance.
            cache = instance(&backend).await?;
        }
        model.after(&tenant, op, &reads, surely);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// [`workload`] on a blocking instance; with `unavailable_allowed`, a call
/// may fail as unavailable (its writes then may or may not have been
/// applied). Returns how many calls failed so.
fn workload_blocking(
    backend: &Backend,
    tenant: &str,
    steps: usize,
    size: usize,
    unavailable_allowed: bool,
) -> anyhow::Result<usize> {
    let mut cache = tenant_cache_tests::cache(backend, "app")?;
    let mut model = Model::default();
    let mut rng = Steps::for_tenant(tenant);
    let mut unavailable = 0;
    for step in 0..steps {
        let op = Op::random(&mut rng, tenant, step, size);
        match op.run(&mut cache, tenant) {
            Ok(reads) => model.after(tenant, op, &reads, true),
            Err(CacheError::Unavailable(_)) if unavailable_allowed => {
                unavailable += 1;
                model.after(tenant, op, &Vec::new(), false);
            }
            Err(error) => return Err(anyhow::anyhow!("{tenant} step {step}: {error}")),
        }
    }
    Ok(unavailable)
}

/// Runs `threads` blocking workloads at once, a thread each, of tenants
/// named `name` and a number: how many calls failed as unavailable.
fn run_blocking_workloads(
    backend: &Backend,
    name: &str,
    threads: usize,
    steps: usize,
    size: usize,
    unavailable_allowed: bool,
) -> anyhow::Result<usize> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                scope.spawn(move || workload_blocking(backend, &format!("{name}{n}"), steps, size, unavailable_allowed))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a workload thread"))
            .sum()
    })
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

#[test]
fn threads_sharing_a_backend_each_get_their_own_answers_on_two_connections_per_server() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let backend = backend(&[&a, &b])?;
    let accepted = connections_accepted(&a)? + connections_accepted(&b)?;
    run_blocking_workloads(&backend, "t", 16, 60, 64, false)?;
    let opened = connections_accepted(&a)? + connections_accepted(&b)? - accepted - 2;
    assert!(opened <= 4, "{opened} connections for 16 threads");
    Ok(())
}

#[test]
fn threads_whose_replies_trickle_in_pieces_get_their_own_answers() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let proxy = FakeServer::start(Behaviour::Trickle {
        upstream: server.address(),
        largest: 7,
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_secs(10))?;
    run_blocking_workloads(&backend, "t", 8, 15, 300, false)?;
    Ok(())
}

#[test]
fn threads_that_time_out_leave_no_answer_to_another() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let slow = Arc::new(AtomicBool::new(false));
    let proxy = FakeServer::start(Behaviour::SlowProxy {
        upstream: server.address(),
        delay: Duration::from_millis(300),
        slow: slow.clone(),
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_millis(150))?;
    let running = Arc::new(AtomicBool::new(true));
    // Replies held back past the deadline for 300 ms of every 400, from
    // the start.
    slow.store(true, Ordering::Relaxed);
    let toggler = {
        let (slow, running) = (slow.clone(), running.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
                slow.store(false, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
                slow.store(true, Ordering::Relaxed);
            }
            slow.store(false, Ordering::Relaxed);
        })
    };
    let unavailable = run_blocking_workloads(&backend, "during", 8, 200, 64, true);
    running.store(false, Ordering::Relaxed);
    toggler.join().expect("the toggling thread");
    let unavailable = unavailable?;
    assert!(unavailable > 0, "no call timed out");
    // Once replies flow again, every thread is served.
    run_blocking_workloads(&backend, "after", 8, 10, 64, false)?;
    Ok(())
}

#[test]
fn callers_that_give_up_at_once_do_not_hold_up_the_others_on_a_slow_link() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let proxy = FakeServer::start(Behaviour::Trickle {
        upstream: server.address(),
        largest: 7,
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_secs(1))?;
    let done = Arc::new(AtomicUsize::new(0));
    let results = two_threads()?.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        // Callers that give up a few microseconds after calling, again and
        // again: most of their batches are still queued when they do.
        let quitters: Vec<_> = (0..16)
            .map(|n| {
                let (backend, stop) = (backend.clone(), stop.clone());
                tokio::spawn(async move {
                    let tenant = format!("quitter-{n}");
                    while !stop.load(Ordering::Relaxed) {
                        let mut cache = instance(&backend).await?;
                        let call = cache.get(&tenant, "k0");
                        let _ = tokio::time::timeout(Duration::from_micros(100), call).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        let honest: Vec<_> = (0..16)
            .map(|n| tokio::spawn(workload(backend.clone(), format!("t{n}"), 25, 0, 64, done.clone())))
            .collect();
        let results = futures_join(honest).await;
        stop.store(true, Ordering::Relaxed);
        for quitter in quitters {
            quitter.await??;
        }
        anyhow::Ok(results)
    })?;
    for result in results {
        result?;
    }
    Ok(())
}

/// memcached's count of `mg` commands it has served.
fn gets_served(server: &MemcachedProcess) -> anyhow::Result<u64> {
    let stats = server.raw("stats\r\n")?;
    let line = stats
        .lines()
        .find_map(|line| line.strip_prefix("STAT cmd_get "))
        .ok_or_else(|| anyhow::anyhow!("no cmd_get in {stats}"))?;
    Ok(line.trim().parse()?)
}

#[test]
fn a_call_given_up_before_it_is_written_is_never_sent() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let slow = Arc::new(AtomicBool::new(false));
    let proxy = FakeServer::start(Behaviour::SlowProxy {
        upstream: server.address(),
        delay: Duration::from_millis(300),
        slow: slow.clone(),
    })?;
    let backend = backend_with_timeout(&[proxy.address()], Duration::from_secs(2))?;
    let workers = two_threads()?;
    workers.block_on(async {
        instance(&backend).await?.set("acme", "k", b"v", None).await?;
        anyhow::Ok(())
    })?;
    let before = gets_served(&server)?;
    slow.store(true, Ordering::Relaxed);
    workers.block_on(async {
        // This get holds the connection for 300 ms...
        let holder = tokio::spawn({
            let backend = backend.clone();
            async move {
                instance(&backend)
                    .await?
                    .get("acme", "k")
                    .await
                    .map_err(anyhow::Error::from)
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...while 50 gets queue behind it and are given up.
        for n in 0..50 {
            let mut cache = instance(&backend).await?;
            let call = cache.get("acme", if n % 2 == 0 { "k" } else { "other" });
            assert!(tokio::time::timeout(Duration::from_millis(2), call).await.is_err());
        }
        assert_eq!(holder.await??.as_deref(), Some(&b"v"[..]));
        anyhow::Ok(())
    })?;
    slow.store(false, Ordering::Relaxed);
    // The connection serves the next call...
    workers.block_on(async {
        assert_eq!(
            instance(&backend).await?.get("acme", "k").await?.as_deref(),
            Some(&b"v"[..])
        );
        anyhow::Ok(())
    })?;
    // ...and memcached saw the two gets (4 reads each), not the 50 given
    // up.
    let served = gets_served(&server)? - before;
    assert!(served < 20, "memcached served {served} gets");
    Ok(())
}
