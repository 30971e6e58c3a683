//! What the tests of the `tenant-cache` binary share.

use std::process::Command;

/// The `tenant-cache` binary with `args`, configured by nothing but them.
pub fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-cache"));
    command
        .args(args)
        .env_remove("TENANT_CACHE_MEMCACHED")
        .env_remove("TENANT_CACHE_APP")
        .env_remove("RUST_LOG");
    command
}
