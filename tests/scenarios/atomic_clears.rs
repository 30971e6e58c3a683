//! docs/semantics.md, guarantee 3: no interleaving of readers, writers and clearers undoes a clear.
//! (The naive algorithm's readers write the namespace counter back and so
//! can restore the value a concurrent clear just moved away from.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tenant_cache_tests::{MemcachedProcess, backend, cache};

const READERS: usize = 6;
const ROUNDS: usize = 15;

#[test]
fn a_clear_racing_many_readers_is_never_undone() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    let mut writer = cache(&backend, "app")?;
    let mut stale_reads = 0;
    let mut reads_after_clear = 0;
    for round in 0..ROUNDS {
        let old = format!("old-{round}").into_bytes();
        for key in 0..10 {
            writer.set("T", &format!("k{key}"), &old, None)?;
        }
        let clear_done: Mutex<Option<Instant>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let reads: Vec<Vec<(Instant, bool)>> = thread::scope(|scope| -> anyhow::Result<_> {
            let readers: Vec<_> = (0..READERS)
                .map(|reader| {
                    let (backend, stop, old) = (&backend, &stop, &old);
                    scope.spawn(move || -> anyhow::Result<Vec<(Instant, bool)>> {
                        let mut cache = cache(backend, "app")?;
                        let mut seen = Vec::new();
                        let mut n = reader;
                        while !stop.load(Ordering::Relaxed) && seen.len() < 5_000 {
                            let started = Instant::now();
                            let value = cache.get("T", &format!("k{}", n % 10))?;
                            seen.push((started, value.as_deref() == Some(old.as_slice())));
                            n += 1;
                        }
                        Ok(seen)
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(5 + (round as u64 % 5) * 3));
            let mut clearer = cache(&backend, "app")?;
            clearer.clear("T")?;
            *clear_done.lock().unwrap() = Some(Instant::now());
            thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            readers
                .into_iter()
                .map(|reader| reader.join().expect("reader panicked"))
                .collect()
        })?;
        let clear_done = clear_done.lock().unwrap().expect("the clear completed");
        for (started, saw_old) in reads.iter().flatten() {
            if *started > clear_done {
                reads_after_clear += 1;
                stale_reads += usize::from(*saw_old);
            }
        }
        for key in 0..10 {
            assert_eq!(
                writer.get("T", &format!("k{key}"))?,
                None,
                "round {round}: k{key} came back"
            );
        }
    }
    assert!(reads_after_clear > 0, "the readers never overlapped the clears");
    assert_eq!(
        stale_reads, 0,
        "{stale_reads} of {reads_after_clear} reads after a clear saw cleared data"
    );
    Ok(())
}

#[test]
fn a_write_finished_before_a_clear_never_survives_it() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let backend = backend(&[&server])?;
    struct Write {
        value: u64,
        started: Instant,
        finished: Instant,
    }
    let writes: Mutex<Vec<Write>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut clears = Vec::new();
    thread::scope(|scope| -> anyhow::Result<()> {
        let writers: Vec<_> = (0..3u64)
            .map(|writer| {
                let (backend, stop, writes) = (&backend, &stop, &writes);
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut cache = cache(backend, "app")?;
                    let mut value = writer;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        cache.set("T", "k", &value.to_le_bytes(), None)?;
                        writes.lock().unwrap().push(Write {
                            value,
                            started,
                            finished: Instant::now(),
                        });
                        value += 3;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut clearer = cache(&backend, "app")?;
        for _ in 0..40 {
            thread::sleep(Duration::from_millis(3));
            let started = Instant::now();
            clearer.clear("T")?;
            let finished = Instant::now();
            // What a read right after the clear returns must have been
            // written by a set that had not finished before the clear began.
            if let Some(bytes) = clearer.get("T", "k")? {
                clears.push((started, finished, u64::from_le_bytes(bytes.as_slice().try_into()?)));
            } else {
                clears.push((started, finished, u64::MAX));
            }
        }
        stop.store(true, Ordering::Relaxed);
        writers
            .into_iter()
            .try_for_each(|writer| writer.join().expect("writer panicked"))
    })?;
    let writes = writes.into_inner().unwrap();
    assert!(writes.len() > 100, "too few writes raced the clears: {}", writes.len());
    for (clear_started, _, seen) in clears.into_iter().filter(|clear| clear.2 != u64::MAX) {
        let write = writes
            .iter()
            .find(|write| write.value == seen)
            .expect("the value read was written");
        assert!(
            write.finished > clear_started,
            "value {seen} was written {:?} before a clear began and survived it",
            clear_started - write.finished
        );
        let _ = write.started;
    }
    Ok(())
}
