//! Coalescing: concurrent async calls bound for one server share its
//! connection, their batches written together and their replies read in
//! order. Each caller still gets exactly its own answers: with hundreds
//! of tasks on two executor threads, with callers giving up mid-exchange,
//! with a server killed under them, and with replies trickling in pieces.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tenant_cache_host::{Backend, CacheError};
use tenant_cache_tests::workload::{instance, workload, workload_blocking};
use tenant_cache_tests::{Behaviour, FakeServer, MemcachedProcess, backend, backend_with_timeout};

/// Two executor threads: the machine's cores.
fn two_threads() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
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

/// Runs `tasks` workloads at once on two executor threads, all within a
/// minute (nothing may hang).
fn run_workloads(backend: &Backend, tasks: usize, steps: usize, give_up: u64, size: usize) -> anyhow::Result<()> {
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
        results.into_iter().collect()
    })
}

/// Connections dialed to two servers (one memcached worker thread each)
/// while `run` uses a backend of both.
fn connections_dialed(run: impl FnOnce(&Backend) -> anyhow::Result<()>) -> anyhow::Result<u64> {
    // One worker thread each: memcached counts a connection in the worker
    // that takes it, so with several a connection made at start (the
    // readiness probe) can be counted after the first `stats`.
    let one_worker = || MemcachedProcess::start_with(&["-t", "1"]);
    let (a, b) = (one_worker()?, one_worker()?);
    let accepted = a.stat("total_connections")? + b.stat("total_connections")?;
    run(&backend(&[&a, &b])?)?;
    // Less the two `stats` connections of this count.
    Ok(a.stat("total_connections")? + b.stat("total_connections")? - accepted - 2)
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
    let opened = connections_dialed(|backend| run_workloads(backend, 256, 40, 0, 64))?;
    // The batches of 256 tasks went over one connection per server.
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
    run_workloads(&backend, 64, 30, 30, 200)?;
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
    run_workloads(&backend, 32, 15, 0, 300)?;
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
    let opened = connections_dialed(|backend| run_blocking_workloads(backend, "t", 16, 60, 64, false).map(drop))?;
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
    let before = server.stat("cmd_get")?;
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
    let served = server.stat("cmd_get")? - before;
    assert!(served < 20, "memcached served {served} gets");
    Ok(())
}
