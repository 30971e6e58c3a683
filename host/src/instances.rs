//! Compiling the component once, and making contained instances of it
//! cheaply: a memory limit and a wall-clock deadline per call. The public
//! face is [`Runtime`](crate::Runtime); the instances' callers
//! (`tenant_cache`) take fresh ones from here, after a trap too.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
};

use crate::backend::Backend;
use crate::capability::{BatchLimits, Grant};
use crate::plugin::{Exports, Plugin};
use crate::precompiled;

/// Bytes of a pooled instance's memory kept resident between instances.
const KEEP_RESIDENT: usize = 64 * 1024;

/// What one instance of the built-in component takes from the pooling
/// allocator: three core instances (the module and wit-bindgen's two
/// shims), one memory, two tables. (A component of another shape fits
/// more or fewer instances.)
const CORE_INSTANCES_EACH: u32 = 3;
const MEMORIES_EACH: u32 = 1;
const TABLES_EACH: u32 = 2;

/// How often the deadline clock ticks.
const TICK: Duration = Duration::from_millis(10);

/// How the component is compiled and contained.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Use wasmtime's pooling allocator: instantiation takes about ten
    /// microseconds, for hosts that create an instance per request. The
    /// pool holds up to `max_instances` live instances of this runtime at
    /// once.
    pub pooling: bool,
    /// With `pooling`, how many instances may live at once (256 by
    /// default); one more fails to instantiate. Each takes address space
    /// (not memory) for its linear memory when the runtime is made.
    pub max_instances: u32,
    /// Keep the compiled component in this directory, keyed by the
    /// component's hash and the engine configuration, so the next process
    /// skips compilation. `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// The most linear memory one instance may grow to, in bytes. One
    /// call's host-side copies are held to it too: the replies gathered for
    /// a batch (see [`BatchLimits`]) and what the component passes in.
    pub memory_limit: usize,
    /// The longest one call may run, host calls included; past it the
    /// component is interrupted (a [`CacheError::Trap`](crate::CacheError::Trap)).
    pub call_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            pooling: false,
            max_instances: 256,
            cache_dir: None,
            memory_limit: 64 * 1024 * 1024,
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// What a store of this crate holds.
pub(crate) struct State {
    pub(crate) grant: Grant,
    pub(crate) limits: MemoryLimit,
}

/// The memory limit, remembering whether it refused the component: a trap
/// that follows is then reported as running out of memory.
pub(crate) struct MemoryLimit {
    limits: StoreLimits,
    pub(crate) bytes: usize,
    pub(crate) refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Stops the epoch thread when the last clone is dropped.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A compiled component and how its instances are made and contained.
/// Cloning is cheap.
#[derive(Clone)]
pub(crate) struct Instances {
    /// With the blocking capability, for `TenantCache`.
    pre: InstancePre<State>,
    /// With the async capability, for `AsyncTenantCache`.
    pre_async: InstancePre<State>,
    exports: Exports,
    options: Arc<RuntimeOptions>,
    /// `options.call_timeout` in ticks of the deadline clock.
    pub(crate) deadline_ticks: u64,
    _ticker: Arc<Ticker>,
}

impl Instances {
    /// Compiles (or loads from `options.cache_dir`) a component from its
    /// bytes, and checks its exports' types on one instance.
    pub(crate) fn new(bytes: &[u8], options: RuntimeOptions) -> anyhow::Result<Instances> {
        let engine = Engine::new(&config(&options))
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;
        let component = match &options.cache_dir {
            Some(dir) => precompiled::load(&engine, bytes, dir)?,
            None => precompiled::compile(&engine, bytes)?,
        };
        let prepare = |linker: Linker<State>| {
            linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .context("the component needs imports this host does not grant")
        };
        let mut linker = Linker::new(&engine);
        crate::capability::add_to_linker(&mut linker, |state: &mut State| &mut state.grant)?;
        let pre = prepare(linker)?;
        let mut linker = Linker::new(&engine);
        crate::capability::add_to_linker_async(&mut linker, |state: &mut State| &mut state.grant)?;
        let pre_async = prepare(linker)?;
        let exports = Exports::of(&component)?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine, stop.clone())?;
        let deadline_ticks = (options.call_timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        let mut instances = Instances {
            pre,
            pre_async,
            exports,
            deadline_ticks,
            options: Arc::new(options),
            _ticker: Arc::new(Ticker(stop)),
        };
        // The exports' types are checked once, on one instance: a component
        // that does not match fails here, and instances of one that does
        // skip the check.
        let (mut store, plugin) = instances.fresh(Grant::new(Backend::embedded(), "type-check"))?;
        instances.exports = plugin.check(&mut store)?;
        Ok(instances)
    }

    /// A new store holding `grant` and an instance in it, for blocking
    /// calls.
    pub(crate) fn fresh(&self, grant: Grant) -> anyhow::Result<(Store<State>, Plugin)> {
        let mut store = self.store(grant, false);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        Ok((store, Plugin::new(instance, self.exports.clone())))
    }

    /// A new store holding `grant` and an instance in it, for async calls.
    pub(crate) async fn fresh_async(&self, grant: Grant) -> anyhow::Result<(Store<State>, Plugin)> {
        let mut store = self.store(grant, true);
        let instance = self
            .pre_async
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        Ok((store, Plugin::new(instance, self.exports.clone())))
    }

    /// A new store holding `grant`, contained; `asynchronous` picks the
    /// engine side of the capability that waits without blocking.
    fn store(&self, grant: Grant, asynchronous: bool) -> Store<State> {
        let pre = if asynchronous { &self.pre_async } else { &self.pre };
        store(pre.engine(), grant, self.options.memory_limit)
    }
}

/// A store of the component on `engine` holding `grant`, contained: its
/// memory held to `memory_limit` bytes, and what the host gathers for one
/// of its calls too. No deadline until a caller sets one; on an engine
/// that meters fuel, fuel without end (the caller bounds the component's
/// work by its deadline, or trusts it).
pub(crate) fn store(engine: &Engine, grant: Grant, memory_limit: usize) -> Store<State> {
    // What the host gathers for one call stays within what the component
    // could hold anyway.
    let limits = grant.limits();
    let grant = grant.with_limits(BatchLimits {
        reply_bytes: limits.reply_bytes.min(memory_limit as u64),
        ..limits
    });
    let limits = MemoryLimit {
        limits: StoreLimitsBuilder::new().memory_size(memory_limit).instances(4).build(),
        bytes: memory_limit,
        refused: false,
    };
    let mut store = Store::new(engine, State { grant, limits });
    store.limiter(|state| &mut state.limits);
    // wasmtime's bound on the bytes one call of the component may make the
    // host copy (many commands borrowing one buffer): no more than the
    // component's memory (wasmtime's default is 128 MiB).
    store.set_hostcall_fuel(memory_limit);
    store.set_epoch_deadline(u64::MAX);
    // Fails (and changes nothing) on an engine without fuel metering.
    let _ = store.set_fuel(u64::MAX);
    store
}

/// The engine configuration for `options`.
fn config(options: &RuntimeOptions) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // No component-model async is used: cheaper calls in both directions.
    config.concurrency_support(false);
    // A guest stuck in a loop is interrupted at the next epoch check.
    config.epoch_interruption(true);
    // Short, one-line trap messages; the component has no debug info anyway.
    config.wasm_backtrace_max_frames(None);
    if options.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(options.max_instances)
            .total_core_instances(options.max_instances * CORE_INSTANCES_EACH)
            .total_memories(options.max_instances * MEMORIES_EACH)
            .total_tables(options.max_instances * TABLES_EACH)
            .max_memory_size(options.memory_limit)
            // Reset the first pages of a freed instance's memory with a
            // memset instead of giving them back to the kernel: the next
            // instance then takes no page faults on the pages every call
            // touches (stack, statics, the start of the heap).
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the engine's epoch every [`TICK`] until `stop` is set.
fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("tenant-cache-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .context("starting the deadline thread")?;
    Ok(())
}
