//! The `tenant-cache` binary as scripts use it (the contract in the README's CLI section).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tenant_cache_memcached_process::MemcachedProcess;

mod common;
use common::cli;

fn run(server: &MemcachedProcess, args: &[&str]) -> anyhow::Result<Output> {
    let address = server.address();
    let mut full = vec!["--memcached", address.as_str()];
    full.extend_from_slice(args);
    Ok(cli(&full).output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn demo_prints_the_walkthrough_without_a_server() -> anyhow::Result<()> {
    let output = cli(&["demo"]).output()?;
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        "Setting Lisboa cache...\nLisboa cached /info is: 2 days\nSetting Barcelona cache...\n\
         Barcelona cached /info is: 3 days\nClearing Barcelona cache...\nBarcelona cached /info is: None\n\
         Lisboa cached /info is: 2 days\n"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("embedded"));
    Ok(())
}

#[test]
fn values_persist_across_processes_on_memcached() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    assert!(run(&server, &["set", "Lisboa", "/info", "2 days"])?.status.success());
    assert!(run(&server, &["set", "Barcelona", "/info", "3 days"])?.status.success());
    let hit = run(&server, &["get", "Lisboa", "/info"])?;
    assert_eq!((hit.status.code(), stdout(&hit).as_str()), (Some(0), "2 days"));
    assert!(run(&server, &["clear", "Barcelona"])?.status.success());
    let miss = run(&server, &["get", "Barcelona", "/info"])?;
    assert_eq!((miss.status.code(), stdout(&miss).as_str()), (Some(1), ""));
    assert_eq!(stdout(&run(&server, &["get", "Lisboa", "/info"])?), "2 days");
    Ok(())
}

#[test]
fn the_environment_configures_server_and_app() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let with_env = |app: &str, args: &[&str]| {
        cli(args)
            .env("TENANT_CACHE_MEMCACHED", server.address())
            .env("TENANT_CACHE_APP", app)
            .output()
    };
    assert!(with_env("shop", &["set", "Lisboa", "/info", "shop"])?.status.success());
    assert!(with_env("blog", &["set", "Lisboa", "/info", "blog"])?.status.success());
    assert!(with_env("shop", &["clear-all"])?.status.success());
    assert_eq!(with_env("shop", &["get", "Lisboa", "/info"])?.status.code(), Some(1));
    assert_eq!(stdout(&with_env("blog", &["get", "Lisboa", "/info"])?), "blog");
    Ok(())
}

#[test]
fn a_ttl_expires_and_stdin_values_round_trip_exactly() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    assert!(run(&server, &["set", "t", "k", "v", "--ttl", "1"])?.status.success());
    let value: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-cache"))
        .args(["--memcached", &server.address(), "set", "t", "binary", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped stdin").write_all(&value)?;
    assert!(child.wait()?.success());
    assert_eq!(run(&server, &["get", "t", "binary"])?.stdout, value);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(run(&server, &["get", "t", "k"])?.status.code(), Some(1));
    Ok(())
}

#[test]
fn errors_are_one_line_and_exit_2() -> anyhow::Result<()> {
    let mut server = MemcachedProcess::start()?;
    let address = server.address();
    server.kill();
    let started = Instant::now();
    let down = run(&server, &["get", "Lisboa", "/info"])?;
    assert!(started.elapsed() < Duration::from_secs(5));
    let running = MemcachedProcess::start()?;
    // A peer that is not memcached: an HTTP server answering anything.
    let http = std::net::TcpListener::bind("127.0.0.1:0")?;
    let http_address = http.local_addr()?.to_string();
    std::thread::spawn(move || {
        for mut stream in http.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    for (output, needle) in [
        (down, address.as_str()),
        (run(&running, &["set", "t", "k", "v", "--ttl", "0"])?, "ttl"),
        (run(&running, &["set", "t", "k", "v", "--ttl", "-5"])?, "not a TTL"),
        (run(&running, &["--timeout-ms", "0", "get", "t", "k"])?, "--timeout-ms"),
        (
            cli(&["--memcached", &http_address, "get", "t", "k"]).output()?,
            "is this a memcached server",
        ),
        (
            cli(&["--component", "/nonexistent/c.wasm", "demo"]).output()?,
            "/nonexistent/c.wasm",
        ),
        (
            cli(&["--memcached", "not an address", "get", "t", "k"]).output()?,
            "not an address",
        ),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.contains("embedded in-process"))
            .collect();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-cache"))
        .args(["--memcached", &running.address(), "set", "t", "k", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The process may stop reading once it knows the value is too large.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&vec![b'x'; 2 * 1024 * 1024]);
    let output = child.wait_with_output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("item limit is 1 MiB"));
    Ok(())
}

#[test]
fn the_compiled_component_is_cached_and_a_broken_cache_is_rebuilt() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tenant-cache-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let demo = || cli(&["demo"]).env("TENANT_CACHE_CACHE_DIR", &dir).output();
    let artifacts = || -> anyhow::Result<Vec<std::path::PathBuf>> {
        Ok(std::fs::read_dir(&dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()?)
    };
    assert!(demo()?.status.success());
    let cached = artifacts()?;
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].extension().is_some_and(|ext| ext == "cwasm"));
    // A corrupted artifact is not trusted: the component is compiled again
    // and the artifact replaced.
    std::fs::write(&cached[0], b"not a compiled component")?;
    let output = demo()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).ends_with("Lisboa cached /info is: 2 days\n"));
    assert!(std::fs::metadata(&cached[0])?.len() > 1000);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn bench_reports_every_measure_the_issue_names() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let output = run(&server, &["bench", "--ops", "100", "--json"])?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("bench: 34/34"), "no progress shown: {stderr:?}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    for key in [
        "raw_get_p50_us",
        "get_p50_us",
        "raw_set_p50_us",
        "set_p50_us",
        "raw_incr_p50_us",
        "clear_p50_us",
        "increment_p50_us",
        "increment_vs_raw_incr_p50",
        "naive_get_p50_us",
        "instantiate_p50_us",
        "fresh_get_p50_us",
        "fresh_set_p50_us",
        "many_tenants_set_p50_us",
        "get_budgeted_vs_raw_get_p50",
        "set_budgeted_vs_raw_set_p50",
        "get_budgeted_vs_get_p50",
        "set_budgeted_vs_set_p50",
        "get_p99_us",
        "raw_get_2t_ops_per_s",
        "get_2t_ops_per_s",
        "get_1t_ops_per_s",
        "naive_get_vs_get_p50",
        "async_get_p50_us",
        "raw_async_get_p50_us",
        "async_set_p50_us",
        "raw_async_set_p50_us",
        "async_get_64c_ops_per_s",
        "raw_async_get_64c_ops_per_s",
        "raw_async_get4_64c_ops_per_s",
        "async_get_1c_ops_per_s",
        "async_get_16c_ops_per_s",
        "async_get_256c_ops_per_s",
        "raw_async_get_64c_coalesced_ops_per_s",
        "async_get_64c_vs_raw_coalesced",
        "raw_get_8t_ops_per_s",
        "get_8t_ops_per_s",
        "stampede_p99_ms",
        "stampede_without_leases_computes_per_key",
        "stampede_hot_key_without_leases_computes",
    ] {
        let value = json[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {json}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    // Leases: one compute per key after a clear, one per expiry of a key
    // living 2 s, read for 4.5 s (the first, and one or two expiries).
    assert_eq!(json["stampede_computes_per_key"].as_f64(), Some(1.0), "{json}");
    assert_eq!(json["stampede_max_computes_per_key"].as_u64(), Some(1), "{json}");
    let hot = json["stampede_hot_key_computes"].as_u64().unwrap_or(0);
    assert!((2..=4).contains(&hot), "{json}");
    let table = run(&server, &["bench", "--ops", "100"])?;
    assert!(table.status.success());
    let table = stdout(&table);
    for row in [
        "raw get",
        "tenant-cache get",
        "tenant-cache clear",
        "tenant-cache increment",
        "naive get",
        "fresh instance + get",
        "fresh instance + set",
        "100 000 tenants",
        "2 thread(s)",
        "tenant-cache async get",
        "8 thread(s)",
        "raw coalesced",
        "2 threads, 256 task(s)",
        "stampede: 4 processes × 16 tasks",
        "per key, 50 keys after a clear",
    ] {
        assert!(table.contains(row), "{row:?} missing in\n{table}");
    }
    Ok(())
}

#[test]
fn bench_without_a_server_fails_in_one_line() -> anyhow::Result<()> {
    let output = cli(&["bench"]).output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--memcached"), "{stderr}");
    let mut gone = MemcachedProcess::start()?;
    gone.kill();
    let output = run(&gone, &["bench"])?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&gone.address()) && !stderr.contains("Error::"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_shorter_server_list_is_refused_and_pool_set_changes_the_pool() -> anyhow::Result<()> {
    let (a, b) = (MemcachedProcess::start()?, MemcachedProcess::start()?);
    let both = format!("{},{}", a.address(), b.address());
    let with = |list: &str, args: &[&str]| {
        let mut full = vec!["--memcached", list];
        full.extend_from_slice(args);
        cli(&full).output()
    };
    for n in 0..20 {
        let tenant = format!("m{n}");
        assert!(
            with(&both, &["set", &tenant, "/info", &format!("old{n}")])?
                .status
                .success()
        );
    }
    let refused = with(&a.address(), &["clear", "m0"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&b.address()) && stderr.contains("pool set"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // Removing B, clearing without it, putting it back with its contents.
    assert!(with(&a.address(), &["pool", "set"])?.status.success());
    for n in 0..20 {
        assert!(with(&a.address(), &["clear", &format!("m{n}")])?.status.success());
    }
    assert!(with(&both, &["pool", "set"])?.status.success());
    for n in 0..20 {
        let output = with(&both, &["get", &format!("m{n}"), "/info"])?;
        assert_eq!(
            (output.status.code(), stdout(&output)),
            (Some(1), String::new()),
            "m{n}"
        );
    }
    let shown = stdout(&with(&both, &["pool", "show"])?);
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert!(shown.lines().all(|line| line.contains("generation=3")), "{shown}");
    Ok(())
}

#[test]
fn an_oversized_write_from_a_fresh_process_removes_the_old_value() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    for size in [1_048_560, 1_048_500, 1_048_576, 1_048_577] {
        assert!(run(&server, &["set", "T", "K", "old"])?.status.success());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tenant-cache"))
            .args(["--memcached", &server.address(), "set", "T", "K", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let _ = child.stdin.take().expect("piped stdin").write_all(&vec![b'x'; size]);
        let output = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{size}: {stderr}");
        assert!(stderr.contains("item limit is 1 MiB"), "{size}: {stderr}");
        let after = run(&server, &["get", "T", "K"])?;
        assert_eq!(
            (after.status.code(), stdout(&after)),
            (Some(1), String::new()),
            "{size}"
        );
    }
    Ok(())
}

/// Runs the CLI with its clock moved to `date` (libfaketime).
fn at(date: &str, server: &MemcachedProcess, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new("faketime");
    command
        .arg(date)
        .arg(env!("CARGO_BIN_EXE_tenant-cache"))
        .args(["--no-cache", "--memcached", &server.address()])
        .args(args)
        .env_remove("TENANT_CACHE_MEMCACHED");
    Ok(command.output()?)
}

#[test]
fn long_ttls_set_under_a_clock_past_2030_do_not_vanish() -> anyhow::Result<()> {
    // memcached keeps its own (real) clock; the host's is moved.
    let server = MemcachedProcess::start()?;
    for (date, ttl) in [
        ("2031-06-01 00:00:00", "315000000"), // ends after 2038: clamped to 2038
        ("2037-12-25 00:00:00", "5000000"),   // 2038 is less than 30 days away
        ("2039-03-01 00:00:00", "3456000"),   // past 2038: 30 days
        ("2027-01-01 00:00:00", "31536000"),  // an ordinary year
    ] {
        let key = format!("k-{ttl}");
        let set = at(date, &server, &["set", "t", &key, "v", "--ttl", ttl])?;
        assert!(set.status.success(), "{date}: {}", String::from_utf8_lossy(&set.stderr));
        let get = run(&server, &["get", "t", &key])?;
        assert_eq!(
            (get.status.code(), stdout(&get)),
            (Some(0), String::from("v")),
            "{date}, ttl {ttl}"
        );
    }
    Ok(())
}

#[test]
fn a_cache_directory_others_can_write_is_refused() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tenant-cache-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let output = cli(&["demo"]).env("TENANT_CACHE_CACHE_DIR", &dir).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("can be written by other users") && stderr.contains("--no-cache"),
        "{stderr}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    assert!(
        cli(&["demo"])
            .env("TENANT_CACHE_CACHE_DIR", &dir)
            .output()?
            .status
            .success()
    );
    let names: Vec<String> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert!(names.len() == 1 && names[0].ends_with(".cwasm"), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn rust_log_shows_each_call_and_nothing_is_logged_by_default() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    assert!(run(&server, &["set", "Lisboa", "/info", "2 days"])?.status.success());
    let quiet = run(&server, &["get", "Lisboa", "/info"])?;
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let logged = cli(&["--memcached", &server.address(), "get", "Lisboa", "/info"])
        .env("RUST_LOG", "tenant_cache_host=debug")
        .output()?;
    assert_eq!(stdout(&logged), "2 days");
    let stderr = String::from_utf8_lossy(&logged.stderr);
    for needle in [
        "tenant_cache.call",
        "operation=\"get\"",
        "tenant=\"Lisboa\"",
        "outcome=\"hit\"",
        "bytes=6",
    ] {
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
    }
    assert!(stderr.contains(&format!("server=\"{}\"", server.address())), "{stderr}");
    Ok(())
}

/// A test-only app (`tests/components/kv-app`, `kv-atomics-app`,
/// `kv-draft2-app`, `hostile-app`, `visits-app`), built once per test
/// process into the test target directory.
fn kv_app(package: &str) -> std::path::PathBuf {
    use std::path::Path;
    use std::sync::OnceLock;
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ is in the workspace");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-components");
        for package in [
            "tenant-cache-kv-app",
            "tenant-cache-kv-atomics-app",
            "tenant-cache-kv-draft2-app",
            "tenant-cache-hostile-app",
            "visits",
        ] {
            tenant_cache_component_build::build_component(package, workspace, &out);
        }
        out.join("wasm-target/wasm32-wasip2/release")
    });
    out.join(format!("{package}.wasm"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_binds_the_app_to_a_tenant_and_clear_hides_what_it_stored() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let app = kv_app("tenant-cache-kv-app");
    let app = app.to_str().expect("a UTF-8 path");
    let run_as = |tenant: &str, args: &[&str]| {
        let mut full = vec!["--app", "shop", "run", "--tenant", tenant, app];
        full.extend_from_slice(args);
        run(&server, &full)
    };
    let stored = run_as("acme", &["set", "cart", "item", "apples"])?;
    assert_eq!(
        (stored.status.code(), stdout(&stored).as_str()),
        (Some(0), ""),
        "{}",
        stderr(&stored)
    );
    run_as("globex", &["set", "cart", "item", "pears"])?;
    assert_eq!(stdout(&run_as("acme", &["get", "cart", "item"])?), "apples\n");
    // Bound to globex, naming acme opens a bucket inside globex.
    assert_eq!(stdout(&run_as("globex", &["get", "acme", "item"])?), "(none)\n");
    // What the app stored is key cart:item of tenant acme.
    assert_eq!(
        stdout(&run(&server, &["--app", "shop", "get", "acme", "cart:item"])?),
        "apples"
    );
    assert!(run(&server, &["--app", "shop", "clear", "acme"])?.status.success());
    assert_eq!(stdout(&run_as("acme", &["get", "cart", "item"])?), "(none)\n");
    assert_eq!(stdout(&run_as("globex", &["get", "cart", "item"])?), "pears\n");
    // Without --tenant the bucket names the tenant.
    let unbound = run(&server, &["--app", "shop", "run", app, "get", "globex", "cart:item"])?;
    assert_eq!(stdout(&unbound), "pears\n");
    Ok(())
}

#[test]
fn run_holds_the_app_to_the_budgets_its_flags_set() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let app = kv_app("tenant-cache-kv-app");
    let app = app.to_str().expect("a UTF-8 path");
    let value = "x".repeat(2000);
    let run_with = |flags: &[&str], args: &[&str]| {
        let mut full = vec!["--app", "shop", "run", "--tenant", "acme"];
        full.extend_from_slice(flags);
        full.push(app);
        full.extend_from_slice(args);
        run(&server, &full)
    };
    // A second of 1 KiB cannot hold the write: refused, and why.
    let refused = run_with(&["--write-budget", "1k"], &["set", "b", "k", &value])?;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("budget of 1024 bytes written per second")
            && stderr(&refused).contains("raise the burst"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(stdout(&run_with(&[], &["get", "b", "k"])?), "(none)\n");
    // Four seconds of it can; with a TTL cap of three seconds (memcached
    // counts whole seconds), it expires.
    let stored = run_with(
        &["--write-budget", "1k", "--burst-seconds", "4", "--max-ttl", "3"],
        &["set", "b", "k", &value],
    )?;
    assert!(stored.status.success(), "{}", stderr(&stored));
    assert_eq!(stdout(&run_with(&[], &["get", "b", "k"])?), format!("{value}\n"));
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(stdout(&run_with(&[], &["get", "b", "k"])?), "(none)\n");
    let zero = run_with(&["--write-budget", "0"], &["get", "b", "k"])?;
    assert_eq!(zero.status.code(), Some(2));
    assert!(stderr(&zero).contains("at least 1k"), "{}", stderr(&zero));
    Ok(())
}

#[test]
fn run_confines_an_app_importing_the_capability_to_its_tenant() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let app = kv_app("tenant-cache-hostile-app");
    let app = app.to_str().expect("a UTF-8 path");
    assert!(
        run(&server, &["--app", "shop", "set", "globex", "k", "secret"])?
            .status
            .success()
    );
    assert!(
        run(&server, &["--app", "shop", "set", "acme", "x", "before"])?
            .status
            .success()
    );
    let old = server.raw_get("tc:shop:n:acme")?.expect("acme has a version");
    assert!(run(&server, &["--app", "shop", "clear", "acme"])?.status.success());
    let output = run(
        &server,
        &["--app", "shop", "run", "--tenant", "acme", app, "acme", "globex", &old],
    )?;
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        out.lines().nth(1).is_some_and(|own| own.starts_with("own: allowed")),
        "{out}"
    );
    let refused = out.lines().filter(|line| line.ends_with(": denied")).count();
    assert_eq!(refused, 24, "{out}");
    assert!(out.ends_with("memo-victim: none\n"), "{out}");
    assert_eq!(
        stdout(&run(&server, &["--app", "shop", "get", "globex", "k"])?),
        "secret"
    );
    let cleared = run(&server, &["--app", "shop", "get", "acme", "x"])?;
    assert_eq!((cleared.status.code(), stdout(&cleared)), (Some(1), String::new()));
    Ok(())
}

#[test]
fn the_readme_visits_app_runs_as_the_readme_shows() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let app = kv_app("visits");
    let app = app.to_str().expect("a UTF-8 path");
    let visit = |tenant: &str| -> anyhow::Result<String> {
        let output = run(&server, &["--app", "shop", "run", "--tenant", tenant, app, "ana"])?;
        assert!(output.status.success(), "{}", stderr(&output));
        Ok(stdout(&output))
    };
    assert_eq!(visit("acme")?, "hello ana, visit 1\n");
    assert_eq!(visit("acme")?, "hello ana, visit 2\n");
    assert_eq!(visit("globex")?, "hello ana, visit 1\n");
    assert!(run(&server, &["--app", "shop", "clear", "acme"])?.status.success());
    assert_eq!(visit("acme")?, "hello ana, visit 1\n");
    // The README's way to read the counter from outside.
    let read = run(&server, &["--app", "shop", "get", "acme", "visits:ana"])?;
    assert_eq!(stdout(&read), "1");
    // And the code the README shows is this app's, to the byte.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(workspace.join("README.md"))?;
    let source = std::fs::read_to_string(workspace.join("tests/components/visits-app/src/main.rs"))?;
    assert!(
        readme.contains(&format!("```rust\n{source}```")),
        "the README's visits app differs from tests/components/visits-app"
    );
    Ok(())
}

#[test]
fn eight_processes_counting_one_key_lose_no_increment() -> anyhow::Result<()> {
    let server = MemcachedProcess::start()?;
    let address = server.address();
    let (draft, draft2) = (
        kv_app("tenant-cache-kv-atomics-app"),
        kv_app("tenant-cache-kv-draft2-app"),
    );
    let (draft, draft2) = (draft.to_str().expect("UTF-8"), draft2.to_str().expect("UTF-8"));
    let spawn = |app: &str, args: &[&str]| {
        let mut full = vec!["--memcached", address.as_str(), "run", "--tenant", "acme", app];
        full.extend_from_slice(args);
        cli(&full).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
    };
    // Four processes per draft, 1000 increments each, and four more
    // adding with compare-and-swap loops to another key, all at once.
    let mut children = Vec::new();
    for n in 0..8 {
        let app = if n % 2 == 0 { draft2 } else { draft };
        children.push(spawn(app, &["visit", "site", "visits", "1000"])?);
    }
    for _ in 0..4 {
        children.push(spawn(draft2, &["cas-add", "site", "total", "1", "50"])?);
    }
    for child in children {
        let output = child.wait_with_output()?;
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let get = |key: &str| -> anyhow::Result<String> {
        let output = run(&server, &["run", "--tenant", "acme", draft, "get", "site", key])?;
        assert!(output.status.success(), "{}", stderr(&output));
        Ok(stdout(&output))
    };
    assert_eq!(get("visits")?, "8000\n");
    assert_eq!(get("total")?, "200\n");
    // A clear of the tenant hides the counter; it counts from 0 again.
    assert!(run(&server, &["clear", "acme"])?.status.success());
    assert_eq!(get("visits")?, "(none)\n");
    let output = run(
        &server,
        &["run", "--tenant", "acme", draft, "visit", "site", "visits", "1"],
    )?;
    assert_eq!(stdout(&output), "1\n");
    Ok(())
}

#[test]
fn run_passes_arguments_and_exit_status_and_reports_traps_in_one_line() -> anyhow::Result<()> {
    let app = kv_app("tenant-cache-kv-app");
    let app = app.to_str().expect("a UTF-8 path");
    // The embedded store, within one process: arguments pass as they are,
    // hyphens included.
    let output = cli(&["run", app, "get-many", "b", "--x", "-y", "--memcached"]).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "--x (none)\n-y (none)\n--memcached (none)\n");
    let output = cli(&["run", app, "exit", "0"]).output()?;
    assert_eq!(output.status.code(), Some(0));
    // A wasip2 app exits 0 or 1; the status is the app's.
    let output = cli(&["run", app, "exit", "1"]).output()?;
    assert_eq!(output.status.code(), Some(1));
    let listed = cli(&["run", app, "list", "b"]).output()?;
    assert_eq!(listed.status.code(), Some(1));
    assert!(
        stderr(&listed).contains("memcached cannot enumerate"),
        "{}",
        stderr(&listed)
    );
    let trapped = cli(&["run", app, "trap"]).output()?;
    // The tenant-cache component itself is no command.
    let dir = tempfile::tempdir()?;
    let component = dir.path().join("tenant-cache.wasm");
    std::fs::write(&component, tenant_cache_host::COMPONENT)?;
    let no_command = cli(&["run", component.to_str().expect("a UTF-8 path")]).output()?;
    let missing = cli(&["run", "/nonexistent/app.wasm"]).output()?;
    for (output, names) in [
        (&trapped, "trapped"),
        (&no_command, "wasi:cli/run"),
        (&missing, "/nonexistent/app.wasm"),
    ] {
        let text = stderr(output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let lines: Vec<&str> = text.lines().filter(|line| !line.contains("embedded")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].starts_with("tenant-cache: error: ") && lines[0].contains(names),
            "{text}"
        );
    }
    Ok(())
}

#[test]
fn the_component_command_writes_the_component_other_hosts_load() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tenant-cache.wasm");
    let output = cli(&["component", "-o", path.to_str().expect("a UTF-8 path")]).output()?;
    assert!(output.status.success(), "{}", stderr(&output));
    let written = std::fs::read(&path)?;
    assert_eq!(written, tenant_cache_host::COMPONENT);
    // It loads and serves like the built-in one.
    let runtime = tenant_cache_host::Runtime::from_file(&path, Default::default())?;
    let grant = tenant_cache_host::Grant::new(tenant_cache_host::Backend::embedded(), "shop");
    let mut cache = runtime.instantiate(grant)?;
    cache.set("t", "k", b"v", None)?;
    assert_eq!(cache.get("t", "k")?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

/// A process listing B and a server outside the pool B,C writes on B after
/// B restarted, with its clock a day behind, so its record claims to be
/// older than the pool's. The pool is then refused, naming the other list;
/// the `pool set` the error names keeps the tenants of C, which kept
/// them.
#[test]
fn a_wrong_list_with_a_clock_behind_is_named_and_pool_set_keeps_what_c_kept() -> anyhow::Result<()> {
    let (mut b, c, d) = (
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
        MemcachedProcess::start()?,
    );
    let pool = format!("{},{}", b.address(), c.address());
    let wrong = format!("{},{}", b.address(), d.address());
    let with = |list: &str, args: &[&str]| -> anyhow::Result<Output> {
        let mut full = vec!["--memcached", list];
        full.extend_from_slice(args);
        Ok(cli(&full).output()?)
    };
    for n in 0..12 {
        assert!(
            with(&pool, &["set", &format!("t{n}"), "k", &format!("v{n}")])?
                .status
                .success()
        );
    }
    let on_c: Vec<usize> = (0..12)
        .filter(|n| {
            c.raw_get(&format!("tc:default:n:t{n}"))
                .is_ok_and(|found| found.is_some())
        })
        .collect();
    assert!(!on_c.is_empty(), "some tenants live on C");
    b.restart()?;
    let behind = Command::new("faketime")
        .args(["-f", "-1d", env!("CARGO_BIN_EXE_tenant-cache"), "--memcached", &wrong])
        .args(["set", "x", "k", "w"])
        .output()?;
    assert!(behind.status.success(), "{}", stderr(&behind));
    let refused = with(&pool, &["set", &format!("t{}", on_c[0]), "k", "again"])?;
    assert_eq!(refused.status.code(), Some(2));
    let mut named = [b.address(), d.address()];
    named.sort();
    assert!(
        stderr(&refused).contains(&format!("of {}", named.join(","))),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("pool set"), "{}", stderr(&refused));
    let set = with(&pool, &["pool", "set"])?;
    assert!(set.status.success(), "{}", stderr(&set));
    for &n in &on_c {
        let read = with(&pool, &["get", &format!("t{n}"), "k"])?;
        assert_eq!(
            stdout(&read),
            format!("v{n}"),
            "t{n} lives on C, which kept it: {}",
            stderr(&read)
        );
    }
    // The wrong list is refused from now on.
    assert_eq!(with(&wrong, &["set", "x", "k", "w"])?.status.code(), Some(2));
    Ok(())
}
