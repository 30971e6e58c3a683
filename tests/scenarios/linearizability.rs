//! docs/semantics.md, "Checked, not argued": concurrent histories of
//! several processes against real memcached, with faults, are
//! linearizable against a sequential specification of the cache
//! (`tenant_cache_tests::history`): a read sees the current value or a
//! miss, never a cleared, overwritten or foreign one; a swap stores only
//! over what it read, a forged token never; at most one lease at a time,
//! and a fill never over a newer write; counts are exact.
//!
//! CI runs each configuration once (a second or two each); set
//! `TENANT_CACHE_HISTORY_ROUNDS` to run each that many times over (a soak).
//! Histories stay short (300 operations a thread): stateright's tester is
//! a depth-first search without memoization, and a history with an
//! operation held up for long (a stopped process's) grows it past minutes
//! at 1000 a thread, so a long run is many short histories.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tenant_cache_tests::history::{Record, check, now, run_workload};
use tenant_cache_tests::{Behaviour, FakeServer, MemcachedProcess, backend_with_timeout};

/// Operations per thread.
fn operations() -> usize {
    300
}

/// How many times each configuration runs.
fn rounds() -> usize {
    std::env::var("TENANT_CACHE_HISTORY_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1)
}

/// A worker process running `threads` threads numbered from `first`.
fn worker(servers: &str, first: u32, threads: u32) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_history-worker"))
        .args([
            servers,
            &first.to_string(),
            &threads.to_string(),
            &operations().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// What a worker recorded.
fn history_of(child: Child) -> anyhow::Result<Vec<Record>> {
    let output = child.wait_with_output()?;
    anyhow::ensure!(output.status.success(), "a worker failed: {:?}", output.status);
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| line.parse().map_err(anyhow::Error::msg))
        .collect()
}

/// Runs `threads` threads in this process (numbered from 0) on `servers`.
fn local_threads(servers: &[String], threads: u32) -> anyhow::Result<Vec<Record>> {
    let backend = backend_with_timeout(servers, Duration::from_secs(5))?;
    let mut all = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let backend = backend.clone();
                scope.spawn(move || {
                    let mut cache = tenant_cache_tests::cache(&backend, "history").expect("an instance");
                    let mut mine = Vec::new();
                    run_workload(&mut cache, thread, operations(), |record| mine.push(record));
                    mine
                })
            })
            .collect();
        for handle in handles {
            all.extend(handle.join().expect("a thread"));
        }
    });
    Ok(all)
}

/// Checks `records` and fails with every violation's history.
fn assert_linearizable(records: &[Record], lossy: bool, what: &str, faults: &[(&str, u64)]) {
    let checked = check(records, lossy);
    let first = records.iter().map(|record| record.invoked).min().unwrap_or(0);
    let last = records
        .iter()
        .filter_map(|record| record.returned.as_ref().map(|(at, _)| *at))
        .max()
        .unwrap_or(0);
    eprintln!(
        "{what}: {} operations in {:.2} s ({} failed and left in flight) in {} register histories, {} violations",
        checked.operations,
        last.saturating_sub(first) as f64 / 1e9,
        checked.failed,
        checked.histories,
        checked.violations.len()
    );
    for (fault, at) in faults {
        let into = at.saturating_sub(first) as f64 / 1e9;
        eprintln!("  {fault} {into:.2} s into the history");
        // A fault outside the history would test nothing.
        assert!(*at > first && *at < last, "{fault} came outside the history");
    }
    assert!(checked.violations.is_empty(), "{}", checked.violations.join("\n\n"));
    assert!(checked.operations > 0, "nothing ran");
}

#[test]
fn histories_of_three_processes_through_a_trickling_proxy_with_one_stopped_midway_are_linearizable()
-> anyhow::Result<()> {
    for _ in 0..rounds() {
        one_server_with_a_client_stopped()?;
    }
    Ok(())
}

fn one_server_with_a_client_stopped() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    // Every client reaches memcached through a proxy passing replies a few
    // bytes at a time (all list the same address, so one pool).
    let proxy = FakeServer::start(Behaviour::Trickle {
        upstream: server.address(),
        largest: 7,
    })?;
    let servers = vec![proxy.address()];
    // The first write records the pool; not part of the history.
    tenant_cache_tests::cache(&backend_with_timeout(&servers, Duration::from_secs(5))?, "history")?
        .set("warm-up", "k", b"v", None)?;
    let stopped = worker(&servers[0], 100, 2)?;
    let running = worker(&servers[0], 200, 2)?;
    let pid = stopped.id().to_string();
    let faults = std::thread::spawn(move || {
        // A client process stopped in the middle of whatever it was doing,
        // then resumed.
        std::thread::sleep(Duration::from_millis(250));
        let _ = Command::new("kill").args(["-STOP", &pid]).status();
        let stopped = now();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        stopped
    });
    let mut records = local_threads(&servers, 3)?;
    let stopped_at = faults.join().expect("the fault thread");
    records.extend(history_of(stopped)?);
    records.extend(history_of(running)?);
    assert_linearizable(
        &records,
        false,
        "one server, trickling proxy, SIGSTOP",
        &[("a client process stopped", stopped_at)],
    );
    Ok(())
}

#[test]
fn histories_on_two_servers_through_a_restart_and_a_pool_set_are_linearizable() -> anyhow::Result<()> {
    for _ in 0..rounds() {
        two_servers_with_a_restart_and_a_pool_set()?;
    }
    Ok(())
}

fn two_servers_with_a_restart_and_a_pool_set() -> anyhow::Result<()> {
    let (a, mut b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let servers = vec![a.address(), b.address()];
    let backend = backend_with_timeout(&servers, Duration::from_secs(5))?;
    tenant_cache_tests::cache(&backend, "history")?.set("warm-up", "k", b"v", None)?;
    let other = worker(&servers.join(","), 100, 2)?;
    let pool_set = backend.clone();
    let faults = std::thread::spawn(move || -> anyhow::Result<(MemcachedProcess, u64, u64)> {
        // An operator's `pool set` of the same list while clients run, then
        // a server restarted empty (what it held is lost: reads may miss
        // from then on, and counts start again).
        std::thread::sleep(Duration::from_millis(100));
        let set_at = now();
        pool_set.set_pool(false)?;
        std::thread::sleep(Duration::from_millis(150));
        let restarted_at = now();
        b.restart()?;
        Ok((b, set_at, restarted_at))
    });
    let mut records = local_threads(&servers, 3)?;
    let (_b, set_at, restarted_at) = faults.join().expect("the fault thread")?;
    records.extend(history_of(other)?);
    assert_linearizable(
        &records,
        true,
        "two servers, pool set, restart",
        &[("pool set", set_at), ("a server restarted", restarted_at)],
    );
    Ok(())
}
