//! `tenant-cache`: the command-line host of the tenant-cache component.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tenant_cache_host::{Backend, Grant, MemcachedOptions, Runtime, TenantCache};

/// A multi-tenant cache on memcached: clear one tenant, or every tenant of
/// an application, without flushing anything else.
#[derive(Parser)]
#[command(version, about)]
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
    #[arg(long, value_name = "MS", default_value_t = 1000, global = true)]
    timeout_ms: u64,
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
        #[arg(long, value_name = "S")]
        ttl: Option<u32>,
    },
    /// Print the value of KEY of TENANT; exit 1 on a miss.
    Get { tenant: String, key: String },
    /// Make every entry of TENANT unreachable.
    Clear { tenant: String },
    /// Make every entry of every tenant of the application unreachable.
    ClearAll,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tenant-cache: error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
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
    }
    Ok(ExitCode::SUCCESS)
}

fn open(cli: &Cli) -> anyhow::Result<TenantCache> {
    let backend = match &cli.memcached {
        Some(servers) => {
            let servers: Vec<&str> = servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if servers.is_empty() {
                bail!("--memcached needs at least one HOST:PORT");
            }
            let options = MemcachedOptions {
                timeout: Duration::from_millis(cli.timeout_ms.max(1)),
                ..Default::default()
            };
            Backend::memcached(&servers, options)?
        }
        None => {
            eprintln!(
                "tenant-cache: no --memcached given: using the embedded in-process store (entries last only as long as this process)"
            );
            Backend::embedded()
        }
    };
    let runtime = match &cli.component {
        Some(path) => Runtime::from_file(path)?,
        None => Runtime::new()?,
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
