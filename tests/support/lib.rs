//! Test support: memcached processes on free loopback ports, raw access
//! to them behind the component's back, and the compiled component.
#![deny(missing_docs)]

mod apps;
mod fake;
pub mod history;
pub mod workload;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

pub use apps::{AppRun, hostile_app, kv_app, kv_atomics_app, kv_draft2_app, run_app, run_app_async};
pub use fake::{Behaviour, FakeServer, Gate};
pub use tenant_cache_memcached_process::MemcachedProcess;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tenant_cache_host::{Backend, Grant, MemcachedOptions, Runtime, RuntimeOptions, TenantCache};

/// The component, compiled once per test process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("the built-in component compiles"))
}

/// A backend on `servers` with the default options.
pub fn backend(servers: &[&MemcachedProcess]) -> anyhow::Result<Backend> {
    let addresses: Vec<String> = servers.iter().map(|server| server.address()).collect();
    Backend::memcached(&addresses, MemcachedOptions::default())
}

/// A fresh component instance for `app` on `backend`.
pub fn cache(backend: &Backend, app: &str) -> anyhow::Result<TenantCache> {
    runtime().instantiate(Grant::new(backend.clone(), app))
}

/// A fresh component instance for `app` on one memcached server.
pub fn cache_on(server: &MemcachedProcess, app: &str) -> anyhow::Result<TenantCache> {
    cache(&backend(&[server])?, app)
}

/// A backend on `servers` with a short exchange deadline, for fault tests.
pub fn backend_with_timeout(servers: &[String], timeout: Duration) -> anyhow::Result<Backend> {
    Backend::memcached(
        servers,
        MemcachedOptions {
            timeout,
            ..Default::default()
        },
    )
}

/// The test-only misbehaving component (see `components/misbehaving`).
pub fn misbehaving(options: RuntimeOptions) -> anyhow::Result<Runtime> {
    Runtime::from_file(Path::new(env!("MISBEHAVING_COMPONENT")), options)
}

/// Runs `run` under a test recorder: every counter it recorded, as
/// "name{label=value,...}" → count.
pub fn counters(run: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<BTreeMap<String, u64>> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, run)?;
    Ok(snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(count) = value else { return None };
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            Some((format!("{}{{{}}}", key.name(), labels.join(",")), count))
        })
        .collect())
}
