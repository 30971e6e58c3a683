//! `tenant-cache component --standalone`: tenant-cache composed with the
//! memcached provider, run by the stock `wasmtime` CLI (50.0.1, which
//! `tests/run.sh` installs with `cargo install --locked` when it is
//! missing; `TENANT_CACHE_WASMTIME` names another binary), against real
//! memcached, beside this repository's host on the same servers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tenant_cache_memcached_process::MemcachedProcess;

mod common;
use common::cli;

/// The `wasmtime` CLI the tests run, checked to be the pinned version.
fn wasmtime() -> Command {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    let path = CHECKED.get_or_init(|| {
        let path = std::env::var_os("TENANT_CACHE_WASMTIME").map_or_else(|| PathBuf::from("wasmtime"), PathBuf::from);
        let version = Command::new(&path).arg("--version").output().unwrap_or_else(|error| {
            panic!(
                "the wasmtime CLI ({}) cannot run: {error}; tests/run.sh installs it \
                 (cargo install --locked wasmtime-cli@50.0.1)",
                path.display()
            )
        });
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(
            version.starts_with("wasmtime 50.0.1"),
            "the tests need wasmtime 50.0.1, the version the host links; {} is {version}",
            path.display()
        );
        path
    });
    let mut command = Command::new(path);
    command.env_remove("RUST_LOG");
    command
}

/// The output of a command that must succeed.
fn succeeds(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// A test app (`tests/components/visits-app`, `http-app`, `hostile-app`),
/// built once per test process.
fn app(file: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let release = BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ is in the workspace");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("standalone-components");
        tenant_cache_component_build::build_components(
            &["visits", "http-app", "tenant-cache-hostile-app"],
            workspace,
            &out,
        );
        out.join("wasm-target/wasm32-wasip2/release")
    });
    release.join(file)
}

/// `app` composed standalone (`--into`), written into `dir`.
fn composed(app: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!(
        "{}-standalone.wasm",
        app.file_stem().and_then(|stem| stem.to_str()).unwrap_or("app")
    ));
    succeeds(&mut cli(&[
        "component",
        "--standalone",
        "--into",
        app.to_str().expect("a UTF-8 path"),
        "-o",
        out.to_str().expect("a UTF-8 path"),
    ]))?;
    Ok(out)
}

/// `wasmtime run` of a composed command, with the provider's environment.
fn wasmtime_run(component: &Path, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Output> {
    let mut command = wasmtime();
    command.args(["run", "-S", "inherit-network"]);
    for (name, value) in env {
        command.arg("--env").arg(format!("{name}={value}"));
    }
    Ok(command.arg(component).args(args).output()?)
}

#[test]
fn the_standalone_component_imports_only_wasi_and_exports_tenant_cache_and_keyvalue() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("standalone.wasm");
    succeeds(&mut cli(&[
        "component",
        "--standalone",
        "-o",
        path.to_str().expect("a UTF-8 path"),
    ]))?;
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, &path)?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_owned()).collect();
    assert!(!imports.is_empty());
    for import in &imports {
        assert!(
            import.starts_with("wasi:") && !import.starts_with("wasi:keyvalue"),
            "the standalone component imports {import}"
        );
    }
    assert!(imports.iter().any(|import| import.starts_with("wasi:sockets/tcp")));
    let exports: Vec<String> = ty.exports(&engine).map(|(name, _)| name.to_owned()).collect();
    for expected in [
        "tenant-cache:cache/tenant-cache@0.8.0",
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:keyvalue/atomics@0.2.0-draft",
        "wasi:keyvalue/batch@0.2.0-draft",
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "wasi:keyvalue/batch@0.2.0-draft2",
    ] {
        assert!(
            exports.iter().any(|export| export == expected),
            "{expected} is not exported: {exports:?}"
        );
    }
    // The provider alone exports the capability and imports WASI only.
    let provider = dir.path().join("provider.wasm");
    succeeds(&mut cli(&[
        "component",
        "--provider",
        "-o",
        provider.to_str().expect("a UTF-8 path"),
    ]))?;
    let provider = wasmtime::component::Component::from_file(&engine, &provider)?;
    let exports: Vec<String> = provider
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert_eq!(exports, ["tenant-cache:cache/memcached@0.8.0"]);
    Ok(())
}

/// The README's visits app counts one visitor's visits per tenant: the same
/// counts whether a visit runs under `tenant-cache run` or composed under
/// `wasmtime run`, alternately, on one server and on a pool of two (the
/// route's server and the pool record are the same to both).
#[test]
fn the_visits_app_counts_the_same_under_wasmtime_run_as_under_tenant_cache_run() -> anyhow::Result<()> {
    let (a, b, c) = (
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    );
    let dir = tempfile::tempdir()?;
    let visits = app("visits.wasm");
    let standalone = composed(&visits, dir.path())?;
    for servers in [a.address(), format!("{},{}", b.address(), c.address())] {
        let app_name = format!("shop-{}", servers.len());
        let mut expected = std::collections::HashMap::new();
        for round in 0..6 {
            for tenant in ["acme", "globex", "initech"] {
                let count = expected.entry(tenant).or_insert(0);
                *count += 1;
                let output = if (round + tenant.len()) % 2 == 0 {
                    let env = [
                        ("TENANT_CACHE_MEMCACHED", servers.as_str()),
                        ("TENANT_CACHE_APP", app_name.as_str()),
                        ("TENANT_CACHE_TENANT", tenant),
                    ];
                    wasmtime_run(&standalone, &env, &["ana"])?
                } else {
                    let app = visits.to_str().expect("a UTF-8 path");
                    let args = [
                        "--memcached",
                        &servers,
                        "--app",
                        &app_name,
                        "run",
                        "--tenant",
                        tenant,
                        app,
                        "ana",
                    ];
                    cli(&args).output()?
                };
                assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                assert_eq!(
                    String::from_utf8(output.stdout)?,
                    format!("hello ana, visit {count}\n"),
                    "{tenant} on {servers}, round {round}"
                );
            }
        }
        // A clear through the host hides the count from the provider.
        succeeds(&mut cli(&[
            "--memcached",
            &servers,
            "--app",
            &app_name,
            "clear",
            "acme",
        ]))?;
        let env = [
            ("TENANT_CACHE_MEMCACHED", servers.as_str()),
            ("TENANT_CACHE_APP", app_name.as_str()),
            ("TENANT_CACHE_TENANT", "acme"),
        ];
        let output = wasmtime_run(&standalone, &env, &["ana"])?;
        assert_eq!(String::from_utf8(output.stdout)?, "hello ana, visit 1\n");
        // Another application on the same servers counts apart.
        let env = [
            ("TENANT_CACHE_MEMCACHED", servers.as_str()),
            ("TENANT_CACHE_APP", "elsewhere"),
            ("TENANT_CACHE_TENANT", "globex"),
        ];
        let output = wasmtime_run(&standalone, &env, &["ana"])?;
        assert_eq!(String::from_utf8(output.stdout)?, "hello ana, visit 1\n");
    }
    Ok(())
}

/// An app importing the capability itself (`hostile-app`), plugged straight
/// into the provider bound to acme, is refused what the host refuses it
/// under `run --tenant acme`: every attempt beyond acme's records, among
/// them undoing the operator's clear and reading globex's entries.
#[test]
fn the_provider_confines_an_app_importing_the_capability_as_the_host_does() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let address = server.address();
    let host = |args: &[&str]| {
        let mut full = vec!["--memcached", address.as_str(), "--app", "shop"];
        full.extend_from_slice(args);
        cli(&full).output()
    };
    assert!(host(&["set", "globex", "k", "secret"])?.status.success());
    assert!(host(&["set", "acme", "x", "before"])?.status.success());
    let old = server.raw_get("tc:shop:n:acme")?.expect("acme has a version");
    assert!(host(&["clear", "acme"])?.status.success());
    let hostile = app("tenant-cache-hostile-app.wasm");
    let dir = tempfile::tempdir()?;
    let plugged = dir.path().join("hostile-provider.wasm");
    succeeds(&mut cli(&[
        "component",
        "--provider",
        "--into",
        hostile.to_str().expect("a UTF-8 path"),
        "-o",
        plugged.to_str().expect("a UTF-8 path"),
    ]))?;
    let env = [
        ("TENANT_CACHE_MEMCACHED", address.as_str()),
        ("TENANT_CACHE_APP", "shop"),
        ("TENANT_CACHE_TENANT", "acme"),
    ];
    let provided = wasmtime_run(&plugged, &env, &["acme", "globex", &old])?;
    let hosted = host(&[
        "run",
        "--tenant",
        "acme",
        hostile.to_str().expect("a UTF-8 path"),
        "acme",
        "globex",
        &old,
    ])?;
    let outcomes = |output: &Output| -> Vec<String> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| match line.split_once(": ") {
                Some((name, outcome)) => format!("{name}: {}", outcome.split(' ').next().unwrap_or_default()),
                None => line.to_owned(),
            })
            .collect()
    };
    assert!(
        provided.status.success(),
        "{}",
        String::from_utf8_lossy(&provided.stderr)
    );
    let (provided, hosted) = (outcomes(&provided), outcomes(&hosted));
    assert_eq!(provided, hosted);
    assert_eq!(
        provided.iter().filter(|line| line.ends_with(": denied")).count(),
        24,
        "{provided:?}"
    );
    assert!(provided.iter().any(|line| line == "own: allowed"), "{provided:?}");
    assert_eq!(String::from_utf8(host(&["get", "globex", "k"])?.stdout)?, "secret");
    assert_eq!(host(&["get", "acme", "x"])?.status.code(), Some(1));
    Ok(())
}

#[test]
fn a_provider_without_a_usable_server_fails_the_call_and_says_why() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let standalone = composed(&app("visits.wasm"), dir.path())?;
    let mut gone = MemcachedProcess::start()?;
    let address = gone.address();
    gone.kill();
    for (env, why) in [
        (vec![], "TENANT_CACHE_MEMCACHED"),
        (vec![("TENANT_CACHE_MEMCACHED", "localhost")], "is not HOST:PORT"),
        (vec![("TENANT_CACHE_MEMCACHED", address.as_str())], address.as_str()),
        (
            vec![
                ("TENANT_CACHE_MEMCACHED", "127.0.0.1:1"),
                ("TENANT_CACHE_TOKEN_SECRET", "short"),
            ],
            "TENANT_CACHE_TOKEN_SECRET must be at least 16 bytes",
        ),
        (
            vec![
                ("TENANT_CACHE_MEMCACHED", "127.0.0.1:1"),
                ("TENANT_CACHE_ITEM_SIZE_LIMIT", "16"),
            ],
            "TENANT_CACHE_ITEM_SIZE_LIMIT",
        ),
    ] {
        let output = wasmtime_run(&standalone, &env, &["ana"])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?}");
        assert!(output.stdout.is_empty(), "{env:?}");
        assert!(stderr.contains(why), "{env:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn plugging_is_refused_without_keyvalue_imports_and_names_what_the_app_shares() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let standalone = dir.path().join("standalone.wasm");
    succeeds(&mut cli(&[
        "component",
        "--standalone",
        "-o",
        standalone.to_str().expect("a UTF-8 path"),
    ]))?;
    // The standalone component itself imports no wasi:keyvalue.
    let output = cli(&[
        "component",
        "--standalone",
        "--into",
        standalone.to_str().expect("a UTF-8 path"),
        "-o",
        dir.path().join("out.wasm").to_str().expect("a UTF-8 path"),
    ])
    .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("imports no wasi:keyvalue interface"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // An app that reads its environment is told it shares the provider's.
    let visits = app("visits.wasm");
    let output = cli(&[
        "component",
        "--standalone",
        "--into",
        visits.to_str().expect("a UTF-8 path"),
        "-o",
        dir.path().join("visits.wasm").to_str().expect("a UTF-8 path"),
    ])
    .output()?;
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TENANT_CACHE_TOKEN_SECRET included"), "{stderr}");
    Ok(())
}

/// `wasmtime serve` running the composed HTTP app: each Host header is a
/// tenant with entries of its own.
struct Served {
    child: Child,
    address: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(component: &Path, env: &[(&str, &str)]) -> anyhow::Result<Served> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let address = format!("127.0.0.1:{port}");
        let mut command = wasmtime();
        command.args(["serve", "-Scli", "-S", "inherit-network", "--addr", &address]);
        for (name, value) in env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        // What it prints goes to a file beside the component: a pipe nobody
        // reads could fill and stall it.
        let log = component.with_extension("log");
        let child = command
            .arg(component)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut served = Served { child, address };
        let started = Instant::now();
        while TcpStream::connect(&served.address).is_err() {
            if let Some(status) = served.child.try_wait()? {
                let stderr = std::fs::read_to_string(&log)?;
                anyhow::bail!("wasmtime serve ended ({status}): {stderr}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "wasmtime serve did not listen on {} within 30 s",
                served.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(served)
    }

    /// One request (HTTP/1.0, so the body ends with the connection):
    /// the status and the body.
    fn request(&self, method: &str, host: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8(response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no end of headers in {response:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
        Ok((status, body.to_owned()))
    }
}

#[test]
fn wasmtime_serve_keeps_each_host_s_entries_apart_and_sees_the_host_s_writes_and_clears() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let address = server.address();
    let dir = tempfile::tempdir()?;
    let http = composed(&app("http_app.wasm"), dir.path())?;
    let served = Served::start(
        &http,
        &[
            ("TENANT_CACHE_MEMCACHED", address.as_str()),
            ("TENANT_CACHE_APP", "shop"),
        ],
    )?;
    assert_eq!(
        served.request("PUT", "acme.localhost", "/greeting", b"hello acme")?.0,
        204
    );
    assert_eq!(
        served
            .request("PUT", "globex.localhost", "/greeting", b"hello globex")?
            .0,
        204
    );
    assert_eq!(
        served.request("GET", "acme.localhost", "/greeting", b"")?,
        (200, String::from("hello acme"))
    );
    assert_eq!(
        served.request("GET", "globex.localhost:8080", "/greeting", b"")?,
        (200, String::from("hello globex"))
    );
    assert_eq!(served.request("GET", "initech.localhost", "/greeting", b"")?.0, 404);
    // A value near memcached's item size limit goes out and comes back
    // whole, over writes and reads the socket splits.
    let large: String = (0..900_000).map(|n| char::from(b'a' + (n % 26) as u8)).collect();
    assert_eq!(
        served.request("PUT", "acme.localhost", "/large", large.as_bytes())?.0,
        204
    );
    assert_eq!(served.request("GET", "acme.localhost", "/large", b"")?, (200, large));
    // What the app wrote, the host reads; what the host writes, the app reads.
    let host = |args: &[&str]| {
        let mut full = vec!["--memcached", address.as_str(), "--app", "shop"];
        full.extend_from_slice(args);
        succeeds(&mut cli(&full))
    };
    assert_eq!(host(&["get", "acme", "greeting"])?, "hello acme");
    host(&["set", "initech", "greeting", "from the host"])?;
    assert_eq!(
        served.request("GET", "initech.localhost", "/greeting", b"")?,
        (200, String::from("from the host"))
    );
    // Requests at once, each on an instance of its own, lose no count.
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let served = &served;
                scope.spawn(move || -> anyhow::Result<Vec<u64>> {
                    let tenant = ["acme", "globex"][worker % 2];
                    let mut counts = Vec::new();
                    for _ in 0..10 {
                        let (status, body) =
                            served.request("POST", &format!("{tenant}.localhost"), "/count/ana", b"")?;
                        anyhow::ensure!(status == 200, "{status} {body}");
                        counts.push(body.parse()?);
                    }
                    Ok(counts)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a worker ran"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    for tenant in 0..2 {
        let mut seen: Vec<u64> = counts.iter().skip(tenant).step_by(2).flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
    }
    // A clear through the host hides acme's entries from the app, and
    // only acme's.
    host(&["clear", "acme"])?;
    assert_eq!(served.request("GET", "acme.localhost", "/greeting", b"")?.0, 404);
    assert_eq!(
        served.request("POST", "acme.localhost", "/count/ana", b"")?,
        (200, String::from("1"))
    );
    assert_eq!(
        served.request("GET", "globex.localhost", "/greeting", b"")?,
        (200, String::from("hello globex"))
    );
    assert_eq!(served.request("DELETE", "globex.localhost", "/greeting", b"")?.0, 204);
    assert_eq!(host(&["get", "globex", "greeting"]).ok(), None);
    Ok(())
}
