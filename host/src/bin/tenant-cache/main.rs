//! `tenant-cache`: the command-line host of the tenant-cache component.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tenant_cache_host::{Backend, EmbeddedOptions, Grant, MemcachedOptions, Runtime, RuntimeOptions, TenantCache};

mod async_rates;
mod bench;
mod budget_flags;
mod naive;
mod noisy;
mod pooled;
mod raw;
mod run;
mod stampede;
mod standalone;

/// mimalloc: a process runs one short command, and most of its time not in
/// memcached goes to allocating (wasmtime's instantiation, the batches).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The memcached provider component built with this binary
/// (`guest/memcached-provider`).
const PROVIDER: &[u8] = include_bytes!(env!("TENANT_CACHE_PROVIDER"));

/// A multi-tenant cache on memcached: clear one tenant, or every tenant of
/// an application, without flushing anything else.
#[derive(Parser)]
#[command(name = "tenant-cache", version)]
struct Cli {
    /// memcached servers, HOST:PORT[,HOST:PORT...]; without it, an embedded
    /// in-process store is used.
    #[arg(long, env = "TENANT_CACHE_MEMCACHED", value_name = "HOST:PORT[,...]", global = true)]
    memcached: Option<String>,
    /// The application whose tenants are addressed.
    #[arg(long, env = "TENANT_CACHE_APP", default_value = "default", global = true)]
    app: String,
    /// Load this component instead of the one built into the binary.
    #[arg(long, value_name = "PATH", global = true)]
    component: Option<PathBuf>,
    /// Deadline for each exchange with memcached, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// memcached's item size limit (its -I): an entry (its value,
    /// tenant-cache's 17-byte header, its key, and 64 bytes of memcached's
    /// own) larger than this is refused, and a stored one read as a miss.
    /// Bytes, or with k or m.
    #[arg(long, value_name = "SIZE", default_value = "1m", value_parser = tenant_cache_memcached::rules::parse_size, global = true)]
    item_size_limit: u64,
    /// Give each batch a connection of its own for its exchange, instead
    /// of coalescing concurrent batches to a server on shared connections.
    #[arg(long, global = true)]
    no_coalesce: bool,
    /// Where the compiled component is cached between runs [default:
    /// $XDG_CACHE_HOME/tenant-cache or ~/.cache/tenant-cache].
    #[arg(long, env = "TENANT_CACHE_CACHE_DIR", value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Compile the component on every start instead of caching it.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Two tenants, one clear: prints the walkthrough's seven lines.
    Demo,
    /// Store VALUE under KEY of TENANT ("-" reads the value from stdin).
    Set {
        tenant: String,
        key: String,
        value: OsString,
        /// Time to live in seconds (at least 1).
        #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = parse_ttl)]
        ttl: Option<u32>,
    },
    /// Print the value of KEY of TENANT; exit 1 on a miss.
    Get { tenant: String, key: String },
    /// Make every entry of TENANT unreachable.
    Clear { tenant: String },
    /// Make every entry of every tenant of the application unreachable.
    ClearAll,
    /// The pool of memcached servers: what each holds as the pool record,
    /// or make the --memcached list the pool after adding or removing one.
    Pool {
        #[command(subcommand)]
        action: PoolAction,
    },
    /// Measure tenant-cache against the raw memcached client and the naive
    /// algorithm on the same memcached (needs --memcached).
    Bench {
        /// Calls per measure.
        #[arg(long, default_value_t = 5000)]
        ops: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One tenant flooding a small memcached (`memcached -m 64`): the other
    /// tenants' hit ratio before, during a flood with a write budget and a
    /// TTL cap, and during one without (needs --memcached).
    NoisyNeighbour {
        #[command(flatten)]
        shape: noisy::Shape,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Only `bench`'s async get throughput, for one kind of call and one
    /// number of tasks, for a profiler or a CPU clock to watch
    /// (docs/architecture.md, "Async throughput under load").
    #[command(hide = true)]
    AsyncLoad {
        /// `tenant-cache`, `raw` (one `mg`, on a connection of its own for
        /// the exchange), `raw-coalesced` (one `mg`, coalesced on the shared
        /// connection) or `raw4` (the four commands of a tenant-cache get,
        /// raw).
        #[arg(long, default_value = "tenant-cache")]
        calls: String,
        #[arg(long, default_value_t = 64)]
        tasks: usize,
        /// Calls per task.
        #[arg(long, default_value_t = 5000)]
        per_task: usize,
    },
    /// Run APP.wasm, a command component that imports wasi:keyvalue
    /// (store, batch @0.2.0-draft or @0.2.0-draft2), with this
    /// application's tenant cache as its key-value store.
    ///
    /// The app gets stdin, stdout, stderr, its ARGS (after APP.wasm itself),
    /// clocks and random; no filesystem, no network, no environment
    /// variables. The exit status is the app's; an app that traps, or that
    /// imports something not provided here, ends with one line on stderr
    /// and status 2.
    Run {
        /// Bind the app to TENANT: every bucket it opens lives inside it
        /// (`clear TENANT` hides them all). Without it, a bucket's name is
        /// its tenant.
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
        #[command(flatten)]
        budgets: budget_flags::BudgetFlags,
        /// The app: a wasm32-wasip2 command component.
        #[arg(value_name = "APP.wasm")]
        app_wasm: PathBuf,
        /// Arguments passed to the app as they are.
        #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Write the tenant-cache component (the .wasm built into this binary,
    /// or --component) to FILE, for hosts that load it themselves.
    Component {
        /// Write it composed with the memcached provider instead: one
        /// component whose only imports are WASI 0.2's (wasi:sockets among
        /// them), for runtimes that link nothing of ours (`wasmtime run
        /// -S inherit-network`, `wasmtime serve -Scli`, Spin). Configured by
        /// its environment: TENANT_CACHE_MEMCACHED and others
        /// (docs/operations.md).
        #[arg(long)]
        standalone: bool,
        /// With --standalone: plug it into APP.wasm's wasi:keyvalue imports,
        /// for one component to run as it is. With --provider: plug the
        /// provider into APP.wasm's import of the capability.
        #[arg(long, value_name = "APP.wasm")]
        into: Option<PathBuf>,
        /// Write the memcached provider alone (it exports the capability,
        /// over wasi:sockets), to compose it yourself.
        #[arg(long, conflicts_with = "standalone")]
        provider: bool,
        /// Where to write it.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// One process of `bench`'s stampede rows (started by `bench`).
    #[command(hide = true)]
    StampedeWorker {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        leases: bool,
        #[arg(long)]
        start_at_ms: u64,
    },
}

#[derive(Subcommand)]
enum PoolAction {
    /// Print the pool record each listed server holds.
    Show,
    /// Make the --memcached list the pool (after adding or removing a
    /// server). Tenants whose server changes start empty there; the others
    /// keep their entries. Every listed server, and every server leaving,
    /// must be reachable.
    Set {
        /// Let a server leave the pool while it is unreachable: only if it
        /// will never come back with its contents.
        #[arg(long)]
        force: bool,
    },
}

/// A size in bytes: digits, optionally followed by k or m (binary units).
/// A TTL: whole seconds, at least 1 (a negative number is read as one, to
/// be refused with this message rather than taken for an option).
fn parse_ttl(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|seconds| u32::try_from(seconds).ok())
        .filter(|&seconds| seconds >= 1)
        // The longest TTL is the component's rule; it says so past it.
        .ok_or_else(|| format!("{text:?} is not a TTL: a whole number of seconds, at least 1"))
}
/// Logs to stderr as `RUST_LOG` says (`LEVEL` or `TARGET=LEVEL,...`, e.g.
/// `RUST_LOG=tenant_cache_host=debug`); nothing by default, and a value
/// that does not parse logs nothing either. A call's span closes with its
/// fields and times. (`Targets` rather than `EnvFilter`: the same syntax
/// for targets and levels, without compiling a regex engine.)
fn install_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse().ok())
        .unwrap_or_default();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_span_events(FmtSpan::CLOSE);
    tracing_subscriber::registry().with(layer.with_filter(filter)).init();
}

fn main() -> ExitCode {
    install_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as usual.
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        // Usage errors, like every other error, are one line on stderr.
        Err(error) => {
            // clap's first paragraph says what is wrong (its list of missing
            // arguments included); the usage that follows is in --help.
            let rendered = error.render().to_string();
            let what: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("tenant-cache: {} (see tenant-cache --help)", what.join(" "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tenant-cache: error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bench { ops, json } = cli.command {
        let servers = servers(&cli)?.context("bench needs a memcached: pass --memcached HOST:PORT")?;
        bench::run(&servers, memcached_options(&cli), ops, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::NoisyNeighbour { shape, json } = &cli.command {
        let servers = servers(&cli)?.context("noisy-neighbour needs a memcached: pass --memcached HOST:PORT")?;
        noisy::run(&servers, memcached_options(&cli), shape, *json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::AsyncLoad { calls, tasks, per_task } = &cli.command {
        let servers = servers(&cli)?.context("async-load needs a memcached: pass --memcached HOST:PORT")?;
        async_rates::load(&servers, memcached_options(&cli), calls, *tasks, *per_task)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Pool { action } = &cli.command {
        let servers = servers(&cli)?.context("pool needs the pool's servers: pass --memcached HOST:PORT[,...]")?;
        let backend = Backend::memcached(&servers, memcached_options(&cli))?;
        match action {
            PoolAction::Show => {
                for report in backend.pool_report()? {
                    match report.record {
                        Ok(Some(record)) => println!("{}: {record}", report.server),
                        Ok(None) => println!("{}: no pool record", report.server),
                        Err(error) => println!("{}: unreachable: {error}", report.server),
                    }
                }
            }
            PoolAction::Set { force } => println!("{}", backend.set_pool(*force)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::StampedeWorker {
        tenant,
        scenario,
        leases,
        start_at_ms,
    } = &cli.command
    {
        let scenario = stampede::Scenario::parse(scenario)?;
        stampede::worker(backend(&cli)?, &cli.app, tenant, scenario, *leases, *start_at_ms)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Component {
        standalone,
        into,
        provider,
        output,
    } = &cli.command
    {
        let composition = match (standalone, provider) {
            (true, _) => Some(standalone::Composition::Standalone),
            (false, true) => Some(standalone::Composition::Provider),
            (false, false) => None,
        };
        let bytes = match composition {
            Some(what) => standalone::compose(what, &component_bytes(&cli)?, PROVIDER, into.as_deref())?.into(),
            None if into.is_some() => bail!("--into plugs --standalone or --provider into an app: give one of them"),
            None => component_bytes(&cli)?,
        };
        std::fs::write(output, bytes).with_context(|| format!("writing the component to {}", output.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Run {
        tenant,
        budgets,
        app_wasm,
        args,
    } = &cli.command
    {
        let mut grant = Grant::new(backend(&cli)?, &cli.app).with_budgets(budgets.budgets());
        if let Some(tenant) = tenant {
            grant = grant.bound_to(tenant);
        }
        return run::run(grant, &component_bytes(&cli)?, app_wasm, args);
    }
    let mut cache = open(&cli)?;
    match cli.command {
        Command::Demo => demo(&mut cache)?,
        Command::Set {
            tenant,
            key,
            value,
            ttl,
        } => {
            let value = if value == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("reading the value from stdin")?;
                bytes
            } else {
                value.into_encoded_bytes()
            };
            cache.set(&tenant, &key, &value, ttl)?;
        }
        Command::Get { tenant, key } => match cache.get(&tenant, &key)? {
            Some(value) => std::io::stdout()
                .write_all(&value)
                .context("writing the value to stdout")?,
            None => return Ok(ExitCode::from(1)),
        },
        Command::Clear { tenant } => cache.clear(&tenant)?,
        Command::ClearAll => cache.clear_all()?,
        Command::Bench { .. }
        | Command::NoisyNeighbour { .. }
        | Command::AsyncLoad { .. }
        | Command::Pool { .. }
        | Command::Run { .. }
        | Command::Component { .. }
        | Command::StampedeWorker { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The servers of `--memcached`, if given.
fn servers(cli: &Cli) -> anyhow::Result<Option<Vec<String>>> {
    let Some(list) = &cli.memcached else { return Ok(None) };
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if servers.is_empty() {
        bail!("--memcached needs at least one HOST:PORT");
    }
    Ok(Some(servers))
}

fn memcached_options(cli: &Cli) -> MemcachedOptions {
    MemcachedOptions {
        timeout: Duration::from_millis(cli.timeout_ms),
        item_size_limit: cli.item_size_limit,
        coalesce: !cli.no_coalesce,
    }
}

fn cache_dir(cli: &Cli) -> Option<PathBuf> {
    if cli.no_cache {
        return None;
    }
    cli.cache_dir
        .clone()
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("tenant-cache")))
}

/// The component's bytes: `--component`, or the one built in.
fn component_bytes(cli: &Cli) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match &cli.component {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the component {}", path.display()))?
            .into(),
        None => tenant_cache_host::COMPONENT.into(),
    })
}

/// The backend `--memcached` names, or the embedded store.
fn backend(cli: &Cli) -> anyhow::Result<Backend> {
    Ok(match servers(cli)? {
        Some(servers) => Backend::memcached(&servers, memcached_options(cli))?,
        None => {
            eprintln!(
                "tenant-cache: no --memcached given: using the embedded in-process store \
                 (entries last only as long as this process)"
            );
            Backend::embedded_with(EmbeddedOptions {
                item_size_limit: cli.item_size_limit,
                ..Default::default()
            })
        }
    })
}

fn open(cli: &Cli) -> anyhow::Result<TenantCache> {
    let backend = backend(cli)?;
    let options = RuntimeOptions {
        cache_dir: cache_dir(cli),
        ..Default::default()
    };
    let runtime = match &cli.component {
        Some(path) => Runtime::from_file(path, options)?,
        None => Runtime::from_bytes(tenant_cache_host::COMPONENT, options)?,
    };
    runtime.instantiate(Grant::new(backend, &cli.app))
}

fn demo(cache: &mut TenantCache) -> anyhow::Result<()> {
    let show = |cache: &mut TenantCache, tenant: &str| -> anyhow::Result<()> {
        let value = cache.get(tenant, "/info")?;
        let shown = value.map_or_else(
            || "None".to_owned(),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        );
        println!("{tenant} cached /info is: {shown}");
        Ok(())
    };
    println!("Setting Lisboa cache...");
    cache.set("Lisboa", "/info", b"2 days", None)?;
    show(cache, "Lisboa")?;
    println!("Setting Barcelona cache...");
    cache.set("Barcelona", "/info", b"3 days", None)?;
    show(cache, "Barcelona")?;
    println!("Clearing Barcelona cache...");
    cache.clear("Barcelona")?;
    show(cache, "Barcelona")?;
    show(cache, "Lisboa")
}
