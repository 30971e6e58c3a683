//! The runtime every tenant-cache measure runs on (bench and async-load).

use tenant_cache_host::{Runtime, RuntimeOptions};

/// The built-in component with the pooling allocator, as a platform making
/// an instance per request runs it: what every tenant-cache measure uses.
/// Room for the 256-task throughput runs' instances beside the ones the
/// other measures hold.
pub fn pooled_runtime() -> anyhow::Result<Runtime> {
    Runtime::from_bytes(
        tenant_cache_host::COMPONENT,
        RuntimeOptions {
            pooling: true,
            max_instances: 512,
            ..Default::default()
        },
    )
}
