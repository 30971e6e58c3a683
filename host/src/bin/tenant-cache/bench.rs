//! `tenant-cache bench`: tenant-cache against the raw memcached client and
//! the naive algorithm, side by side, on the same memcached in one run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use memcache::exp::MetaClient;
use tenant_cache_host::{Backend, Grant, MemcachedOptions, Runtime, RuntimeOptions};

use crate::naive::Naive;

/// One measured operation: latencies of single calls, and throughput.
struct Measure {
    name: &'static str,
    key: &'static str,
    p50: f64,
    p99: f64,
    ops_per_s: f64,
    /// The raw-client measure this one is compared with.
    baseline: Option<&'static str>,
}

/// Times `ops` calls of `call` (after a warm-up of a tenth as many).
fn time(ops: usize, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64, f64)> {
    for _ in 0..ops / 10 {
        call()?;
    }
    let mut samples = Vec::with_capacity(ops);
    let started = Instant::now();
    for _ in 0..ops {
        let before = Instant::now();
        call()?;
        samples.push(before.elapsed());
    }
    let total = started.elapsed();
    samples.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let p50 = micros(samples[samples.len() / 2]);
    let p99 = micros(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]);
    Ok((p50, p99, ops as f64 / total.as_secs_f64()))
}

/// Runs `per_thread` calls on each of `threads` threads, each with its own
/// state from `setup`; returns the combined ops/s.
fn throughput<S: Send>(
    threads: usize,
    per_thread: usize,
    setup: impl Fn() -> anyhow::Result<S> + Sync,
    call: impl Fn(&mut S) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let states: Vec<S> = (0..threads).map(|_| setup()).collect::<anyhow::Result<_>>()?;
    let barrier = std::sync::Barrier::new(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let (barrier, call) = (&barrier, &call);
                scope.spawn(move || -> anyhow::Result<()> {
                    barrier.wait();
                    (0..per_thread).try_for_each(|_| call(&mut state))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|handle| handle.join().expect("bench thread panicked"))
    })?;
    Ok((threads * per_thread) as f64 / started.elapsed().as_secs_f64())
}

/// Runs the whole bench on the first server of `servers`.
pub fn run(servers: &[String], options: MemcachedOptions, ops: usize, json: bool) -> anyhow::Result<()> {
    let server = servers.first().context("bench needs --memcached HOST:PORT")?.clone();
    let ops = ops.max(100);
    let steps = 13;
    let mut step = 0;
    let mut progress = |what: &str| {
        step += 1;
        eprint!("\rbench: {step:>2}/{steps} {what:<40}");
        let _ = std::io::stderr().flush();
    };
    let client = MetaClient::builder()
        .connect_timeout(Some(options.timeout))
        .io_timeout(Some(options.timeout))
        .connect(server.as_str())
        .with_context(|| format!("connecting to memcached at {server}"))?;
    client.noop().with_context(|| format!("memcached at {server} does not answer"))?;
    let run_id: u64 = rand::random();
    let raw_key = format!("tc-bench:{run_id:x}:raw");
    let value = vec![b'v'; 100];
    client.set(&raw_key, &value).send()?;
    client.set(format!("{raw_key}:n"), "0").send()?;

    let backend = Backend::memcached(std::slice::from_ref(&server), options)?;
    let app = format!("tenant-cache-bench-{run_id:x}");
    let runtime = Runtime::from_bytes(tenant_cache_host::COMPONENT, RuntimeOptions { pooling: true, ..Default::default() })?;
    let unpooled = Runtime::from_bytes(tenant_cache_host::COMPONENT, RuntimeOptions::default())?;
    let grant = Grant::new(backend.clone(), &app);
    let mut cache = runtime.instantiate(grant.clone())?;
    cache.set("bench", "/k", &value, None)?;
    let naive = Naive { client: &client, prefix: format!("tc-bench:{run_id:x}:naive:") };
    naive.set("bench", "/k", &value)?;

    let mut measures = Vec::new();
    let mut add = |name, key, baseline, (p50, p99, ops_per_s): (f64, f64, f64)| {
        measures.push(Measure { name, key, p50, p99, ops_per_s, baseline });
    };
    progress("raw client get");
    add("raw client get", "raw_get", None, time(ops, || Ok(drop(client.get(&raw_key).send()?)))?);
    progress("raw client set (100 B)");
    add("raw client set (100 B)", "raw_set", None, time(ops, || Ok(drop(client.set(&raw_key, &value).send()?)))?);
    progress("raw client increment");
    let counter = format!("{raw_key}:n");
    add("raw client increment", "raw_incr", None, time(ops, || Ok(drop(client.increment(&counter).send()?)))?);
    progress("tenant-cache get");
    add("tenant-cache get", "get", Some("raw_get"), time(ops, || Ok(drop(cache.get("bench", "/k")?)))?);
    progress("tenant-cache set (100 B)");
    add("tenant-cache set (100 B)", "set", Some("raw_set"), time(ops, || Ok(cache.set("bench", "/k", &value, None)?))?);
    progress("tenant-cache clear");
    add("tenant-cache clear", "clear", Some("raw_incr"), time(ops, || Ok(cache.clear("bench")?))?);
    cache.set("bench", "/k", &value, None)?;
    progress("naive get (3 round trips)");
    add("naive get (3 round trips)", "naive_get", Some("raw_get"), time(ops, || Ok(drop(naive.get("bench", "/k")?)))?);
    progress("naive set (3 round trips)");
    add("naive set (3 round trips)", "naive_set", Some("raw_set"), time(ops, || naive.set("bench", "/k", &value))?);
    progress("instantiate (pooling allocator)");
    add("instantiate (pooling)", "instantiate", None, time(ops, || Ok(drop(runtime.instantiate(grant.clone())?)))?);
    progress("instantiate (on-demand allocator)");
    let unpooled_ops = (ops / 4).max(100);
    add("instantiate (on-demand)", "instantiate_on_demand", None, time(unpooled_ops, || {
        Ok(drop(unpooled.instantiate(grant.clone())?))
    })?);
    progress("fresh instance + get");
    add("fresh instance + get (pooling)", "fresh_get", Some("raw_get"), time(ops, || {
        Ok(drop(runtime.instantiate(grant.clone())?.get("bench", "/k")?))
    })?);

    let mut rates = Vec::new();
    for threads in [1, 2] {
        progress(if threads == 1 { "throughput, 1 thread" } else { "throughput, 2 threads" });
        let raw = throughput(threads, ops, || Ok(()), |_| Ok(drop(client.get(&raw_key).send()?)))?;
        let component = throughput(
            threads,
            ops,
            || runtime.instantiate(grant.clone()),
            |cache| Ok(drop(cache.get("bench", "/k")?)),
        )?;
        rates.push((threads, raw, component));
    }
    eprintln!("\rbench: done{:<50}", "");
    let _ = client.delete(&raw_key).send();
    let _ = cache.clear_all();

    if json {
        println!("{}", to_json(&measures, &rates, ops));
    } else {
        print!("{}", to_table(&measures, &rates, ops, &server));
    }
    Ok(())
}

fn p50_of(measures: &[Measure], key: &str) -> f64 {
    measures.iter().find(|measure| measure.key == key).map_or(f64::NAN, |measure| measure.p50)
}

fn to_json(measures: &[Measure], rates: &[(usize, f64, f64)], ops: usize) -> String {
    let mut fields = vec![format!("\"ops\":{ops}")];
    for measure in measures {
        fields.push(format!("\"{}_p50_us\":{:.1}", measure.key, measure.p50));
        fields.push(format!("\"{}_p99_us\":{:.1}", measure.key, measure.p99));
        fields.push(format!("\"{}_ops_per_s\":{:.0}", measure.key, measure.ops_per_s));
        if let Some(baseline) = measure.baseline {
            fields.push(format!("\"{}_vs_{baseline}_p50\":{:.3}", measure.key, measure.p50 / p50_of(measures, baseline)));
        }
    }
    for (threads, raw, component) in rates {
        fields.push(format!("\"raw_get_{threads}t_ops_per_s\":{raw:.0}"));
        fields.push(format!("\"get_{threads}t_ops_per_s\":{component:.0}"));
    }
    fields.push(format!("\"naive_get_vs_get_p50\":{:.3}", p50_of(measures, "naive_get") / p50_of(measures, "get")));
    fields.push(format!(
        "\"fresh_instance_extra_p50_us\":{:.1}",
        p50_of(measures, "fresh_get") - p50_of(measures, "get")
    ));
    format!("{{{}}}", fields.join(","))
}

fn to_table(measures: &[Measure], rates: &[(usize, f64, f64)], ops: usize, server: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tenant-cache bench: memcached at {server}, {ops} calls per measure, one thread\n");
    let _ = writeln!(out, "{:<34} {:>9} {:>9} {:>10}   {}", "measure", "p50 µs", "p99 µs", "ops/s", "p50 vs raw");
    for measure in measures {
        let ratio = measure
            .baseline
            .map(|baseline| format!("{:.2}× {baseline}", measure.p50 / p50_of(measures, baseline)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<34} {:>9.1} {:>9.1} {:>10.0}   {ratio}",
            measure.name, measure.p50, measure.p99, measure.ops_per_s
        );
    }
    let _ = writeln!(out, "\n{:<34} {:>12} {:>14} {:>8}", "get throughput", "raw ops/s", "tenant-cache", "ratio");
    for (threads, raw, component) in rates {
        let _ = writeln!(out, "{:<34} {raw:>12.0} {component:>14.0} {:>8.2}", format!("{threads} thread(s)"), component / raw);
    }
    let _ = writeln!(
        out,
        "\nnaive get / tenant-cache get (p50): {:.2}×; a fresh instance per call adds {:.1} µs (p50)",
        p50_of(measures, "naive_get") / p50_of(measures, "get"),
        p50_of(measures, "fresh_get") - p50_of(measures, "get")
    );
    out
}
