//! One process of the linearizability scenario (`scenarios/linearizability.rs`):
//! runs the workload of `support/history.rs` on several threads against
//! memcached and prints every operation it recorded, one per line.
//!
//! `history-worker SERVERS FIRST-THREAD THREADS OPERATIONS`: SERVERS is a
//! comma-separated list; threads are numbered from FIRST-THREAD.

use std::sync::Mutex;

use tenant_cache_host::{Backend, MemcachedOptions};
use tenant_cache_tests::history::{Record, run_workload};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [servers, first, threads, operations] = &args[..] else {
        anyhow::bail!("usage: history-worker SERVERS FIRST-THREAD THREADS OPERATIONS");
    };
    let servers: Vec<&str> = servers.split(',').collect();
    let (first, threads, operations): (u32, u32, usize) = (first.parse()?, threads.parse()?, operations.parse()?);
    let backend = Backend::memcached(&servers, MemcachedOptions::default())?;
    let records = Mutex::new(Vec::<Record>::new());
    std::thread::scope(|scope| {
        for thread in first..first + threads {
            let (backend, records) = (backend.clone(), &records);
            scope.spawn(move || {
                let mut cache = tenant_cache_tests::cache(&backend, "history").expect("an instance");
                let mut mine = Vec::new();
                run_workload(&mut cache, thread, operations, |record| mine.push(record));
                records.lock().expect("records").extend(mine);
            });
        }
    });
    for record in records.into_inner().expect("records") {
        println!("{record}");
    }
    Ok(())
}
