//! The examples under `host/examples/` run against a memcached this test
//! starts (cargo builds them along with the tests).

use std::path::PathBuf;
use std::process::Command;

use tenant_cache_memcached_process::MemcachedProcess;

/// `target/<profile>/examples/<name>`, next to this test's `deps/`.
fn example_path(name: &str) -> anyhow::Result<PathBuf> {
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
    run_example_with(name, &[&server.address()])
}

/// Runs example `name` with `args`; its stdout once it succeeded.
fn run_example_with(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(example_path(name)?).args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

#[test]
fn the_embedding_examples_run_blocking_and_on_tokio() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let stdout = run_example("embed_async", &server)?;
    assert_eq!(stdout, "Lisboa: Some(\"2 days\")\nBarcelona: None\n");
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
fn the_budgets_example_writes_until_its_budget_refuses_and_says_why() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let stdout = run_example("budgets", &server)?;
    // 4 MiB of burst holds 40 values of 100 KiB and their keys, and a
    // little flows in while they are written.
    let stored: usize = stdout.split(' ').next().unwrap_or_default().parse()?;
    assert!((40..=45).contains(&stored), "{stdout}");
    assert!(
        stdout.contains("over the budget of 2097152 bytes written per second (burst 4194304 bytes)")
            && stdout.contains("retry in"),
        "{stdout}"
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

/// One HTTP/1.1 request, connection closed after: (status, body).
fn http(address: &str, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header in {:?}", String::from_utf8_lossy(&response)))?;
    let status = std::str::from_utf8(&response[9..12])?.parse()?;
    Ok((status, response[split + 4..].to_vec()))
}

/// The HTTP example, running; killed when dropped.
struct Service {
    child: std::process::Child,
    address: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_service(servers: &[&MemcachedProcess]) -> anyhow::Result<Service> {
    use std::io::BufRead;
    let list: Vec<String> = servers.iter().map(|server| server.address()).collect();
    let mut child = Command::new(example_path("http_server")?)
        .args([list.join(","), "127.0.0.1:0".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
        .to_owned();
    Ok(Service { child, address })
}

#[test]
fn the_tokio_http_service_keeps_isolation_and_clears_under_64_concurrent_requests() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let service = start_service(&[&a, &b])?;
    let address = service.address.as_str();
    let tenants = 16;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let clients: Vec<_> = (0..64)
            .map(|client| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for round in 0..10 {
                        let (tenant, key) = (client % tenants, format!("k{client}-{round}"));
                        let value = format!("t{tenant}/{key}");
                        assert_eq!(
                            http(address, "PUT", &format!("/t{tenant}/{key}"), value.as_bytes())?.0,
                            204
                        );
                        let (status, body) = http(address, "GET", &format!("/t{tenant}/{key}"), b"")?;
                        assert_eq!((status, body), (200, value.into_bytes()), "client {client}");
                    }
                    Ok(())
                })
            })
            .collect();
        clients
            .into_iter()
            .try_for_each(|client| client.join().expect("client panicked"))
    })?;
    // Clearing one tenant, while others are read at once, hides exactly it.
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let clear = scope.spawn(|| http(address, "POST", "/t0/clear", b""));
        for client in 1..64 {
            let tenant = client % tenants;
            if tenant != 0 {
                let (status, _) = http(address, "GET", &format!("/t{tenant}/k{client}-0"), b"")?;
                assert_eq!(status, 200);
            }
        }
        assert_eq!(clear.join().expect("clear panicked")?.0, 204);
        Ok(())
    })?;
    for client in (0..64).filter(|client| client % tenants == 0) {
        assert_eq!(http(address, "GET", &format!("/t0/k{client}-0"), b"")?.0, 404);
    }
    Ok(())
}

#[test]
fn a_frozen_memcached_does_not_stall_the_single_executor_thread() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let (frozen, live) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let service = start_service(&[&frozen, &live])?;
    let address = service.address.clone();
    let on = |server: &MemcachedProcess| -> anyhow::Result<String> {
        for n in 0..100 {
            let tenant = format!("x{n}");
            http(&address, "PUT", &format!("/{tenant}/k"), b"v")?;
            if server.raw_get(&format!("tc:http-example:n:{tenant}"))?.is_some() {
                return Ok(tenant);
            }
        }
        anyhow::bail!("no tenant landed on {}", server.address())
    };
    let (stuck, served) = (on(&frozen)?, on(&live)?);
    frozen.signal("STOP")?;
    let started = Instant::now();
    let waiting = {
        let (address, stuck) = (address.clone(), stuck.clone());
        std::thread::spawn(move || http(&address, "GET", &format!("/{stuck}/k"), b""))
    };
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..20 {
        assert_eq!(
            http(&address, "GET", &format!("/{served}/k"), b"")?,
            (200, b"v".to_vec())
        );
    }
    let served_in = started.elapsed();
    let (status, _) = waiting.join().expect("client panicked")?;
    let stuck_for = started.elapsed();
    frozen.signal("CONT")?;
    eprintln!(
        "20 requests of a live server's tenant in {served_in:?}; the frozen one's answered {status} after {stuck_for:?}"
    );
    assert_eq!(status, 503);
    assert!(served_in < Duration::from_millis(700), "{served_in:?}");
    assert!(stuck_for >= Duration::from_millis(900), "{stuck_for:?}");
    Ok(())
}

#[test]
fn the_runtime_examples_run_blocking_and_on_tokio() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for name in ["runtime", "runtime_async"] {
        assert_eq!(run_example(name, &server)?, "Lisboa: 2 days\n", "{name}");
    }
    Ok(())
}

/// The README's visits app (`tests/components/visits-app`), built for
/// wasm32-wasip2.
fn visits_app() -> PathBuf {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-components");
    tenant_cache_component_build::build_component("visits", workspace, &out)
}

#[test]
fn the_keyvalue_examples_serve_an_app_inside_its_tenant_blocking_and_on_tokio() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let app = visits_app();
    let visit = |example: &str, tenant: &str| -> anyhow::Result<String> {
        run_example_with(
            example,
            &[&server.address(), app.to_str().expect("a UTF-8 path"), tenant, "ana"],
        )
    };
    assert_eq!(visit("keyvalue_sync", "acme")?, "hello ana, visit 1\n");
    assert_eq!(visit("keyvalue_async", "acme")?, "hello ana, visit 2\n");
    // Another tenant counts apart.
    assert_eq!(visit("keyvalue_async", "globex")?, "hello ana, visit 1\n");
    assert_eq!(visit("keyvalue_sync", "acme")?, "hello ana, visit 3\n");
    Ok(())
}

/// Every Rust block of the README and of docs/ is a part, line for line, of
/// a file the build compiles (an example here, or the README's visits
/// app), so none can drift from the code.
#[test]
fn every_rust_block_of_the_readme_and_the_docs_is_part_of_compiled_code() -> anyhow::Result<()> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace");
    let mut sources = vec![std::fs::read_to_string(
        workspace.join("tests/components/visits-app/src/main.rs"),
    )?];
    let mut documents = vec![workspace.join("README.md")];
    for (directory, extension, into) in [("host/examples", "rs", 0), ("docs", "md", 1)] {
        for entry in std::fs::read_dir(workspace.join(directory))? {
            let path = entry?.path();
            if path.extension().is_some_and(|found| found == extension) {
                match into {
                    0 => sources.push(std::fs::read_to_string(&path)?),
                    _ => documents.push(path),
                }
            }
        }
    }
    let mut blocks = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document)?;
        for block in text.split("```rust\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            blocks += 1;
            assert!(
                sources.iter().any(|source| source.contains(block)),
                "{}: this Rust block is part of no example (host/examples/) nor of the visits app:\n{block}",
                document.display()
            );
        }
    }
    assert!(blocks >= 7, "only {blocks} Rust blocks found");
    Ok(())
}
