//! Host memory for one call stays bounded by the grant's limits: a
//! component asking one batch for 1 000 reads of a 1 MB item (1 GB of
//! replies) makes the host gather at most the reply limit (the component's
//! memory limit, 64 MiB) before failing with the typed limit error. In its
//! own test binary, so no other test's allocations move the process's
//! high-water mark.

use tenant_cache_host::{CacheError, Grant, RuntimeOptions};
use tenant_cache_tests::{MemcachedProcess, backend, misbehaving};

/// The process's peak resident memory so far, in bytes (Linux).
fn peak_resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmHWM in kB");
    kib * 1024
}

#[test]
fn one_call_asking_for_a_gigabyte_of_replies_costs_the_host_a_bounded_amount() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let mut attacker = misbehaving(RuntimeOptions::default())?.instantiate(Grant::new(backend(&[&server])?, "a"))?;
    attacker.set("escape", "big", &vec![7u8; 1_000_000], None)?;
    let before = peak_resident();
    let result = attacker.get("amplify", "big");
    let grown = peak_resident().saturating_sub(before);
    eprintln!(
        "1 000 gets of a 1 MB item in one call: the host's peak resident memory grew by {} MiB",
        grown / (1024 * 1024)
    );
    assert!(
        matches!(&result, Err(CacheError::Internal(message)) if message.contains("ReplyBytes")),
        "{result:?}"
    );
    assert!(grown < 192 * 1024 * 1024, "grew by {grown} bytes");
    Ok(())
}
