//! `tenant-cache bench`: tenant-cache against the raw memcached client and
//! the naive algorithm, side by side, on the same memcached in one run.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use memcache::exp::{MetaClient, MetaCommand, MetaOp};
use tenant_cache_host::{Backend, Budgets, Grant, MemcachedOptions, Rate, Runtime, RuntimeOptions};

use crate::async_rates::{self, AsyncRate};
use crate::naive::Naive;
use crate::pooled::pooled_runtime;
use crate::raw::{raw, raw_get, raw_get_alone, raw_get_async, raw_set, raw_set_async};
use crate::stampede::{self, KEYS, PROCESSES, Stampede, TASKS};

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

/// A measure being taken.
struct Case<'a> {
    name: &'static str,
    key: &'static str,
    baseline: Option<&'static str>,
    call: Box<dyn FnMut() -> anyhow::Result<()> + 'a>,
    /// Runs before each call, outside the timed section.
    setup: Option<Box<dyn FnMut() -> anyhow::Result<()> + 'a>>,
    samples: Vec<Duration>,
}

impl<'a> Case<'a> {
    fn new(
        name: &'static str,
        key: &'static str,
        baseline: Option<&'static str>,
        call: impl FnMut() -> anyhow::Result<()> + 'a,
    ) -> Self {
        Case {
            name,
            key,
            baseline,
            call: Box::new(call),
            setup: None,
            samples: Vec::new(),
        }
    }

    /// Adds a step that runs before every call, outside the timed section.
    fn untimed_step(mut self, setup: impl FnMut() -> anyhow::Result<()> + 'a) -> Self {
        self.setup = Some(Box::new(setup));
        self
    }
}

/// Discards a call's result: only its time matters here.
fn done<T>(_result: T) -> anyhow::Result<()> {
    Ok(())
}

/// Calls per case before moving on to the next case.
const SLICE: usize = 50;

/// Times `ops` calls of every case, interleaved in slices of [`SLICE`]
/// calls, so that every case sees the same machine: a noisy moment slows
/// them all rather than skewing one ratio.
fn measure(cases: &mut [Case<'_>], ops: usize, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Measure>> {
    for case in cases.iter_mut() {
        progress(case.name);
        for _ in 0..ops / 10 {
            if let Some(setup) = &mut case.setup {
                setup()?;
            }
            (case.call)()?;
        }
    }
    progress("all measures, interleaved");
    for _ in 0..ops.div_ceil(SLICE) {
        for case in cases.iter_mut() {
            for _ in 0..SLICE {
                if let Some(setup) = &mut case.setup {
                    setup()?;
                }
                let before = Instant::now();
                (case.call)()?;
                case.samples.push(before.elapsed());
            }
        }
    }
    Ok(cases
        .iter_mut()
        .map(|case| {
            case.samples.sort_unstable();
            let micros = |d: Duration| d.as_secs_f64() * 1e6;
            let total: Duration = case.samples.iter().sum();
            let count = case.samples.len();
            Measure {
                name: case.name,
                key: case.key,
                p50: micros(case.samples[count / 2]),
                p99: micros(case.samples[(count * 99 / 100).min(count - 1)]),
                ops_per_s: count as f64 / total.as_secs_f64(),
                baseline: case.baseline,
            }
        })
        .collect())
}

/// Runs `per_thread` calls on each of `threads` threads, each with its own
/// state from `setup` (made before the clock starts); returns the time
/// from the first call to the last.
fn throughput<S: Send>(
    threads: usize,
    per_thread: usize,
    setup: impl Fn() -> anyhow::Result<S> + Sync,
    call: impl Fn(&mut S) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Duration> {
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
        handles
            .into_iter()
            .try_for_each(|handle| handle.join().expect("bench thread panicked"))
    })?;
    Ok(started.elapsed())
}

/// Throughput runs alternate between the raw client and tenant-cache this
/// many times, so a slow moment of the machine weighs on both.
const THROUGHPUT_ROUNDS: usize = 5;

/// Threads of the blocking throughput runs: one, the machine's cores, and
/// more threads than cores (a threaded server).
const THREADS: [usize; 3] = [1, 2, 8];

/// Runs the whole bench on the first server of `servers`.
pub fn run(servers: &[String], options: MemcachedOptions, ops: usize, json: bool) -> anyhow::Result<()> {
    let server = servers.first().context("bench needs --memcached HOST:PORT")?.clone();
    let ops = ops.max(100);
    // The raw baseline and the naive algorithm run on the very client and
    // connection tenant-cache uses: memcached hands each connection to one
    // of its worker threads, and the latency of one worker can differ from
    // another's by several microseconds, more than what is measured here.
    let backend = Backend::memcached(std::slice::from_ref(&server), options.clone())?;
    raw_get(&backend, "tc-bench:ping").with_context(|| format!("memcached at {server} does not answer"))?;
    // The crate's pooled client, on a connection of its own, for reference.
    let client = MetaClient::builder()
        .connect_timeout(Some(options.timeout))
        .io_timeout(Some(options.timeout))
        .connect(server.as_str())
        .with_context(|| format!("connecting to memcached at {server}"))?;
    let run_id: u64 = rand::random();
    let raw_key = format!("tc-bench:{run_id:x}:raw");
    let value = vec![b'v'; 100];
    raw_set(&backend, &raw_key, &value, None)?;
    raw_set(&backend, &format!("{raw_key}:n"), b"0", None)?;
    let get4_keys = async_rates::raw_get4_keys(&backend, &raw_key)?;

    let app = format!("tenant-cache-bench-{run_id:x}");
    let runtime = pooled_runtime()?;
    let unpooled = Runtime::from_bytes(tenant_cache_host::COMPONENT, RuntimeOptions::default())?;
    let grant = Grant::new(backend.clone(), &app);
    let mut cache = runtime.instantiate(grant.clone())?;
    cache.set("bench", "/k", &value, None)?;
    cache.set("bench-set", "/k", &value, None)?;
    let naive = Naive {
        backend: &backend,
        prefix: format!("tc-bench:{run_id:x}:naive:"),
    };
    naive.set("bench", "/k", &value)?;

    let counter = format!("{raw_key}:n");
    // The async rows run on one executor thread; each call is one
    // `block_on`, raw and component alike.
    let executor = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut async_get_cache = executor.block_on(runtime.instantiate_async(grant.clone()))?;
    let mut async_set_cache = executor.block_on(runtime.instantiate_async(grant.clone()))?;
    let mut get_cache = runtime.instantiate(grant.clone())?;
    let mut set_cache = runtime.instantiate(grant.clone())?;
    let mut clear_cache = runtime.instantiate(grant.clone())?;
    // Budgets that never refuse here: what their checks cost.
    let budgeted = grant.clone().with_budgets(Budgets {
        bytes_written: Some(Rate {
            per_second: 1 << 40,
            burst: 1 << 40,
        }),
        commands: Some(Rate {
            per_second: 1 << 40,
            burst: 1 << 40,
        }),
        max_ttl: Some(86_400),
    });
    let mut budgeted_get_cache = runtime.instantiate(budgeted.clone())?;
    let mut budgeted_set_cache = runtime.instantiate(budgeted)?;
    let mut increment_cache = runtime.instantiate(grant.clone())?;
    increment_cache.increment("bench", "/n", 1)?;
    let unpooled_grant = grant.clone();
    let (pooled, on_demand, fresh_slot, fresh_set_slot, dropped) = (
        RefCell::new(None),
        RefCell::new(None),
        RefCell::new(None),
        RefCell::new(None),
        RefCell::new(None),
    );
    // One instance writing round-robin to more tenants than it remembers
    // itself, each written once before the measure.
    let mut many_cache = runtime.instantiate(grant.clone())?;
    let tenants: Vec<String> = (0..MANY_TENANTS).map(|n| format!("many-{n}")).collect();
    eprint!("\rbench: writing {MANY_TENANTS} tenants once");
    for tenant in &tenants {
        many_cache.set(tenant, "/k", &value, None)?;
    }
    let mut next_tenant = tenants.iter().cycle();
    let mut cases = vec![
        Case::new("raw get", "raw_get", None, || done(raw_get(&backend, &raw_key)?)),
        Case::new("raw set (100 B)", "raw_set", None, || {
            raw_set(&backend, &raw_key, &value, None)
        }),
        Case::new("raw increment", "raw_incr", None, || {
            done(raw(&backend, MetaCommand::new(MetaOp::Arithmetic, counter.as_str()))?)
        }),
        Case::new(
            "memcache MetaClient get (own conn.)",
            "metaclient_get",
            Some("raw_get"),
            || done(client.get(&raw_key).send()?),
        ),
        Case::new("tenant-cache get", "get", Some("raw_get"), || {
            done(get_cache.get("bench", "/k")?)
        }),
        Case::new("tenant-cache set (100 B)", "set", Some("raw_set"), || {
            Ok(set_cache.set("bench-set", "/k", &value, None)?)
        }),
        Case::new("tenant-cache get, budgets", "get_budgeted", Some("raw_get"), || {
            done(budgeted_get_cache.get("bench", "/k")?)
        }),
        Case::new(
            "tenant-cache set (100 B), budgets",
            "set_budgeted",
            Some("raw_set"),
            || Ok(budgeted_set_cache.set("bench-set", "/k", &value, None)?),
        ),
        Case::new("tenant-cache clear", "clear", Some("raw_incr"), || {
            Ok(clear_cache.clear("bench-clear")?)
        }),
        Case::new("tenant-cache increment", "increment", Some("raw_incr"), || {
            done(increment_cache.increment("bench", "/n", 1)?)
        }),
        Case::new("raw async get", "raw_async_get", None, || {
            done(executor.block_on(raw_get_async(&backend, &raw_key))?)
        }),
        Case::new("raw async set (100 B)", "raw_async_set", None, || {
            executor.block_on(raw_set_async(&backend, &raw_key, &value))
        }),
        Case::new("tenant-cache async get", "async_get", Some("raw_async_get"), || {
            done(executor.block_on(async_get_cache.get("bench", "/k"))?)
        }),
        Case::new(
            "tenant-cache async set (100 B)",
            "async_set",
            Some("raw_async_set"),
            || Ok(executor.block_on(async_set_cache.set("bench-set", "/k", &value, None))?),
        ),
        Case::new("naive get (3 round trips)", "naive_get", Some("raw_get"), || {
            done(naive.get("bench", "/k")?)
        }),
        Case::new("naive set (3 round trips)", "naive_set", Some("raw_set"), || {
            naive.set("bench-set", "/k", &value)
        }),
        // An instance per request: the request waits for instantiation and
        // the call; the instance is dropped after the response (measured
        // on its own below), so drops happen outside the timed section.
        Case::new("instantiate (pooling)", "instantiate", None, || {
            done(pooled.replace(Some(runtime.instantiate(grant.clone())?)))
        })
        .untimed_step(|| done(pooled.take())),
        Case::new("instantiate (on-demand)", "instantiate_on_demand", None, || {
            done(on_demand.replace(Some(unpooled.instantiate(unpooled_grant.clone())?)))
        })
        .untimed_step(|| done(on_demand.take())),
        Case::new("fresh instance + get (pooling)", "fresh_get", Some("raw_get"), || {
            let mut fresh = runtime.instantiate(grant.clone())?;
            fresh.get("bench", "/k")?;
            done(fresh_slot.replace(Some(fresh)))
        })
        .untimed_step(|| done(fresh_slot.take())),
        Case::new("fresh instance + set (pooling)", "fresh_set", Some("raw_set"), || {
            let mut fresh = runtime.instantiate(grant.clone())?;
            fresh.set("bench-set", "/k", &value, None)?;
            done(fresh_set_slot.replace(Some(fresh)))
        })
        .untimed_step(|| done(fresh_set_slot.take())),
        Case::new(
            "set, 100 000 tenants round-robin",
            "many_tenants_set",
            Some("raw_set"),
            || {
                let tenant = next_tenant.next().expect("a cycle never ends");
                Ok(many_cache.set(tenant, "/k", &value, None)?)
            },
        ),
        Case::new("drop an instance (pooling)", "drop", None, || done(dropped.take()))
            .untimed_step(|| done(dropped.replace(Some(runtime.instantiate(grant.clone())?)))),
    ];
    // Each case's warm-up, the interleaved measures, the blocking and async
    // throughputs, four stampedes.
    let steps = cases.len() + 1 + THREADS.len() + async_rates::ASYNC_TASKS.len() + 4;
    let mut step = 0;
    let mut progress = |what: &str| {
        step += 1;
        eprint!("\rbench: {step:>2}/{steps} {what:<40}");
        let _ = std::io::stderr().flush();
    };
    let measures = measure(&mut cases, ops, &mut progress)?;
    drop(cases);

    let mut rates = Vec::new();
    for threads in THREADS {
        progress(&format!("throughput, {threads} thread(s)"));
        let per_round = ops.div_ceil(THROUGHPUT_ROUNDS);
        let (mut raw, mut component) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..THROUGHPUT_ROUNDS {
            raw += throughput(
                threads,
                per_round,
                || Ok(()),
                |_| done(raw_get_alone(&backend, &raw_key)?),
            )?;
            component += throughput(
                threads,
                per_round,
                || runtime.instantiate(grant.clone()),
                |cache| done(cache.get("bench", "/k")?),
            )?;
        }
        let calls = (threads * per_round * THROUGHPUT_ROUNDS) as f64;
        rates.push((threads, calls / raw.as_secs_f64(), calls / component.as_secs_f64()));
    }
    let async_rates = async_rates::measure(
        &backend,
        (&runtime, &grant),
        (&raw_key, &get4_keys),
        ops.div_ceil(THROUGHPUT_ROUNDS),
        THROUGHPUT_ROUNDS,
        &mut progress,
    )?;
    let stampede = stampede::run(&server, &app, &mut progress)?;
    eprintln!("\rbench: done{:<50}", "");
    // What the bench wrote outside tenant-cache goes; the naive records
    // expire within the hour, and the bench application is cleared.
    for key in [raw_key.as_str(), counter.as_str(), &get4_keys[0], &get4_keys[1]] {
        let _ = raw(&backend, MetaCommand::new(MetaOp::Delete, key));
    }
    let _ = cache.clear_all();

    if json {
        println!("{}", to_json(&measures, &rates, &async_rates, &stampede, ops));
    } else {
        print!("{}", to_table(&measures, &rates, &async_rates, &stampede, ops, &server));
    }
    Ok(())
}

/// Tenants of the round-robin set measure (`many_tenants_set`).
const MANY_TENANTS: usize = 100_000;

fn p50_of(measures: &[Measure], key: &str) -> f64 {
    measures
        .iter()
        .find(|measure| measure.key == key)
        .map_or(f64::NAN, |measure| measure.p50)
}

/// `value` rounded to `digits` decimals, as a JSON number.
fn rounded(value: f64, digits: i32) -> serde_json::Value {
    let scale = 10f64.powi(digits);
    serde_json::json!((value * scale).round() / scale)
}

fn to_json(
    measures: &[Measure],
    rates: &[(usize, f64, f64)],
    async_rates: &[AsyncRate],
    stampede: &Stampede,
    ops: usize,
) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("ops".into(), ops.into());
    for measure in measures {
        fields.insert(format!("{}_p50_us", measure.key), rounded(measure.p50, 1));
        fields.insert(format!("{}_p99_us", measure.key), rounded(measure.p99, 1));
        fields.insert(format!("{}_ops_per_s", measure.key), rounded(measure.ops_per_s, 0));
        if let Some(baseline) = measure.baseline {
            let ratio = measure.p50 / p50_of(measures, baseline);
            fields.insert(format!("{}_vs_{baseline}_p50", measure.key), rounded(ratio, 3));
        }
    }
    // What the budgets' checks cost: the same call with and without them.
    for (budgeted, plain) in [("get_budgeted", "get"), ("set_budgeted", "set")] {
        let ratio = p50_of(measures, budgeted) / p50_of(measures, plain);
        fields.insert(format!("{budgeted}_vs_{plain}_p50"), rounded(ratio, 3));
    }
    for (threads, raw, component) in rates {
        fields.insert(format!("raw_get_{threads}t_ops_per_s"), rounded(*raw, 0));
        fields.insert(format!("get_{threads}t_ops_per_s"), rounded(*component, 0));
    }
    for AsyncRate {
        tasks,
        raw,
        raw_coalesced,
        raw4,
        component,
    } in async_rates
    {
        fields.insert(format!("raw_async_get_{tasks}c_ops_per_s"), rounded(*raw, 0));
        fields.insert(
            format!("raw_async_get_{tasks}c_coalesced_ops_per_s"),
            rounded(*raw_coalesced, 0),
        );
        fields.insert(
            format!("async_get_{tasks}c_vs_raw_coalesced"),
            rounded(component / raw_coalesced, 3),
        );
        fields.insert(format!("raw_async_get4_{tasks}c_ops_per_s"), rounded(*raw4, 0));
        fields.insert(format!("async_get_{tasks}c_ops_per_s"), rounded(*component, 0));
        fields.insert(format!("async_get_{tasks}c_vs_raw"), rounded(component / raw, 3));
        fields.insert(format!("async_get_{tasks}c_vs_raw4"), rounded(component / raw4, 3));
    }
    let naive = p50_of(measures, "naive_get") / p50_of(measures, "get");
    fields.insert("naive_get_vs_get_p50".into(), rounded(naive, 3));
    let fresh = p50_of(measures, "fresh_get") - p50_of(measures, "get");
    fields.insert("fresh_instance_extra_p50_us".into(), rounded(fresh, 1));
    fields.insert(
        "stampede_computes_per_key".into(),
        rounded(stampede.computes_per_key, 2),
    );
    fields.insert("stampede_max_computes_per_key".into(), stampede.most_computes.into());
    fields.insert(
        "stampede_without_leases_computes_per_key".into(),
        rounded(stampede.computes_per_key_without, 2),
    );
    fields.insert("stampede_p99_ms".into(), rounded(stampede.p99_ms, 1));
    fields.insert("stampede_hot_key_computes".into(), stampede.hot_computes.into());
    fields.insert(
        "stampede_hot_key_without_leases_computes".into(),
        stampede.hot_computes_without.into(),
    );
    serde_json::Value::Object(fields).to_string()
}

fn to_table(
    measures: &[Measure],
    rates: &[(usize, f64, f64)],
    async_rates: &[AsyncRate],
    stampede: &Stampede,
    ops: usize,
    server: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tenant-cache bench: memcached at {server}, {ops} calls per measure, interleaved, one thread\n"
    );
    let _ = writeln!(
        out,
        "{:<34} {:>9} {:>9} {:>10}   p50 vs raw",
        "measure", "p50 µs", "p99 µs", "ops/s"
    );
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
    let _ = writeln!(
        out,
        "\n{:<34} {:>12} {:>14} {:>8}",
        "get throughput", "raw ops/s", "tenant-cache", "ratio"
    );
    for (threads, raw, component) in rates {
        let _ = writeln!(
            out,
            "{:<34} {raw:>12.0} {component:>14.0} {:>8.2}",
            format!("{threads} thread(s)"),
            component / raw
        );
    }
    let _ = writeln!(
        out,
        "\n{:<26} {:>10} {:>13} {:>6} {:>14} {:>6} {:>14} {:>6}",
        "async get throughput,",
        "raw ops/s",
        "tenant-cache",
        "ratio",
        "raw coalesced",
        "ratio",
        "raw 4-command",
        "ratio"
    );
    for AsyncRate {
        tasks,
        raw,
        raw_coalesced,
        raw4,
        component,
    } in async_rates
    {
        let _ = writeln!(
            out,
            "{:<26} {raw:>10.0} {component:>13.0} {:>6.2} {raw_coalesced:>14.0} {:>6.2} {raw4:>14.0} {:>6.2}",
            format!("2 threads, {tasks} task(s)"),
            component / raw,
            component / raw_coalesced,
            component / raw4
        );
    }
    let _ = writeln!(
        out,
        "\nnaive get / tenant-cache get (p50): {:.2}×; a fresh instance per call adds {:.1} µs (p50)",
        p50_of(measures, "naive_get") / p50_of(measures, "get"),
        p50_of(measures, "fresh_get") - p50_of(measures, "get")
    );
    let _ = writeln!(
        out,
        "\nstampede: {PROCESSES} processes × {TASKS} tasks, each miss computing for 20 ms\n\
         {:<34} {:>12} {:>14}\n\
         {:<34} {:>12.2} {:>14.2}\n\
         {:<34} {:>12} {:>14}\n\
         with leases: at most {} computes of a key; p99 read {:.1} ms",
        "computes",
        "no leases",
        "leases",
        format!("per key, {KEYS} keys after a clear"),
        stampede.computes_per_key_without,
        stampede.computes_per_key,
        "of a key living 2 s, over 4.5 s",
        stampede.hot_computes_without,
        stampede.hot_computes,
        stampede.most_computes,
        stampede.p99_ms,
    );
    out
}
