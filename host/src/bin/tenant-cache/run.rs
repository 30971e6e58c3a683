//! `tenant-cache run`: an ordinary `wasi:keyvalue` command component run
//! with tenant-cache as its key-value store (the library's
//! `keyvalue::add_component_to_linker`) and a narrow WASI: stdio,
//! arguments, clocks and random. Its filesystem has no directories, its
//! network reaches no address, and its environment is empty. An app
//! composed with the tenant-cache component ahead of time (`wac plug`)
//! imports the memcached capability instead, which is granted too.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tenant_cache_host::Grant;
use tenant_cache_host::keyvalue::{self, Calls, KeyValue, KeyValueView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// What the app's store holds.
struct App {
    wasi: WasiCtx,
    table: ResourceTable,
    keyvalue: KeyValue,
}

impl WasiView for App {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl KeyValueView for App {
    fn keyvalue(&mut self) -> &mut KeyValue {
        &mut self.keyvalue
    }
}

/// Runs `app` with `args` (after the app's path, its first argument) on `grant`, with
/// the tenant-cache component `provider` (compiled here) serving its
/// `wasi:keyvalue`. The exit status is the app's; an error (a trap, an
/// import not provided) is the caller's to report.
pub fn run(grant: Grant, provider: &[u8], app: &Path, args: &[OsString]) -> anyhow::Result<ExitCode> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // One-line trap messages.
    config.wasm_backtrace_max_frames(None);
    let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
    let provider = Component::new(&engine, provider)
        .map_err(anyhow::Error::from)
        .context("compiling the tenant-cache component")?;
    let app_component = Component::from_file(&engine, app)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("loading {}", app.display()))?;

    let mut linker = Linker::<App>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
    keyvalue::add_component_to_linker(&mut linker, &provider, Calls::Blocking)?;
    // An app composed with tenant-cache imports the capability itself.
    tenant_cache_host::add_to_linker(&mut linker, |app: &mut App| app.keyvalue.grant_mut())?;

    let mut argv = vec![app.display().to_string()];
    for arg in args {
        let arg = arg
            .to_str()
            .with_context(|| format!("the app argument {arg:?} is not UTF-8"))?;
        argv.push(arg.to_owned());
    }
    let wasi = WasiCtxBuilder::new()
        .inherit_stdio()
        .args(&argv)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let state = App {
        wasi,
        table: ResourceTable::new(),
        keyvalue: KeyValue::new(grant),
    };
    let mut store = Store::new(&engine, state);
    let command = Command::instantiate(&mut store, &app_component, &linker)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} cannot run here", app.display()))?;
    match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(())) => Ok(ExitCode::FAILURE),
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(ExitCode::from(u8::try_from(*code).unwrap_or(1))),
            None => Err(anyhow::Error::from(error).context(format!("{} trapped", app.display()))),
        },
    }
}
