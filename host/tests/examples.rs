//! The examples under `host/examples/` run against a memcached this test
//! starts (cargo builds them along with the tests).

use std::path::PathBuf;
use std::process::Command;

use tenant_cache_memcached_process::MemcachedProcess;

/// `target/<profile>/examples/<name>`, next to this test's `deps/`.
fn example(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in <profile>/deps");
    let path = profile_dir.join("examples").join(name);
    anyhow::ensure!(path.exists(), "{} was not built", path.display());
    Ok(path)
}

/// Runs example `name` against `server`; its stdout once it succeeded.
fn run_example(name: &str, server: &MemcachedProcess) -> anyhow::Result<String> {
    let output = Command::new(example(name)?).arg(server.address()).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

#[test]
fn the_embedding_example_runs() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let stdout = run_example("embed", &server)?;
    assert_eq!(stdout, "Lisboa: Some(\"2 days\")\nBarcelona: None\n");
    // Besides the application's keys, only the host's record of the pool.
    let keys = server.keys()?;
    assert!(
        keys.iter().all(|key| key.starts_with("tc:my-app:") || key == "tc:pool"),
        "{keys:?}"
    );
    Ok(())
}

#[test]
fn the_instance_pool_example_serves_concurrent_requests() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let stdout = run_example("pool", &server)?;
    assert!(stdout.starts_with("8000 requests from 8 threads"), "{stdout}");
    Ok(())
}
