//! The test-only apps (`components/kv-app`, `components/kv-atomics-app`,
//! `components/kv-draft2-app`, `components/hostile-app`, built by
//! `build.rs`), and a host that runs them as the library's docs say a
//! platform does: `wasi:keyvalue` through `keyvalue::add_to_linker`, and
//! the memcached capability itself for apps composed with tenant-cache.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tenant_cache_host::Grant;
use tenant_cache_host::keyvalue::{self, KeyValue, KeyValueView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// `components/kv-app`: an ordinary wasi:keyvalue command.
pub fn kv_app() -> PathBuf {
    PathBuf::from(env!("KV_APP_COMPONENT"))
}

/// `components/kv-atomics-app`: imports `wasi:keyvalue/atomics`.
pub fn kv_atomics_app() -> PathBuf {
    PathBuf::from(env!("KV_ATOMICS_APP_COMPONENT"))
}

/// `components/kv-draft2-app`: speaks `wasi:keyvalue@0.2.0-draft2`.
pub fn kv_draft2_app() -> PathBuf {
    PathBuf::from(env!("KV_DRAFT2_APP_COMPONENT"))
}

/// `components/hostile-app`: imports the memcached capability itself and
/// tries to reach beyond its tenant.
pub fn hostile_app() -> PathBuf {
    PathBuf::from(env!("HOSTILE_APP_COMPONENT"))
}

/// How an app's run ended.
#[derive(Debug)]
pub struct AppRun {
    /// The exit status, or the error that ended it (trap, link failure).
    pub status: Result<i32, String>,
    /// What it printed.
    pub stdout: String,
    /// What it printed to stderr.
    pub stderr: String,
}

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

/// An engine and a linker with WASI, tenant-cache's `wasi:keyvalue` and
/// the store's grant as the memcached capability, blocking or async.
fn linker(asynchronous: bool) -> &'static Linker<App> {
    static LINKERS: [OnceLock<Linker<App>>; 2] = [OnceLock::new(), OnceLock::new()];
    LINKERS[asynchronous as usize].get_or_init(|| {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        if asynchronous {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links");
            keyvalue::add_to_linker_async(&mut linker).expect("keyvalue links");
            tenant_cache_host::add_to_linker_async(&mut linker, grant).expect("the capability links");
        } else {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links");
            keyvalue::add_to_linker(&mut linker).expect("keyvalue links");
            tenant_cache_host::add_to_linker(&mut linker, grant).expect("the capability links");
        }
        linker
    })
}

/// The store's grant, for apps composed with tenant-cache.
fn grant(app: &mut App) -> &mut Grant {
    app.keyvalue.grant_mut()
}

fn store(engine: &Engine, grant: Grant, args: &[&str]) -> (Store<App>, MemoryOutputPipe, MemoryOutputPipe) {
    let (stdout, stderr) = (MemoryOutputPipe::new(1 << 20), MemoryOutputPipe::new(1 << 20));
    let mut argv = vec!["kv-app"];
    argv.extend_from_slice(args);
    let wasi = WasiCtxBuilder::new()
        .args(&argv)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();
    let app = App {
        wasi,
        table: ResourceTable::new(),
        keyvalue: KeyValue::new(grant),
    };
    (Store::new(engine, app), stdout, stderr)
}

fn ended(status: wasmtime::Result<Result<(), ()>>, stdout: MemoryOutputPipe, stderr: MemoryOutputPipe) -> AppRun {
    let status = match status {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(*code),
            None => Err(format!("{error:#}")),
        },
    };
    let text = |pipe: MemoryOutputPipe| String::from_utf8_lossy(&pipe.contents()).into_owned();
    AppRun {
        status,
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

/// Runs `app` with `args` on `grant`, blocking.
pub fn run_app(app: &Path, grant: Grant, args: &[&str]) -> AppRun {
    let linker = linker(false);
    let (mut store, stdout, stderr) = store(linker.engine(), grant, args);
    let status = Component::from_file(linker.engine(), app).and_then(|component| {
        let command = wasmtime_wasi::p2::bindings::sync::Command::instantiate(&mut store, &component, linker)?;
        command.wasi_cli_run().call_run(&mut store)
    });
    ended(status, stdout, stderr)
}

/// Runs `app` with `args` on `grant`, with `call_async` (on a tokio
/// runtime).
pub async fn run_app_async(app: &Path, grant: Grant, args: &[&str]) -> AppRun {
    let linker = linker(true);
    let (mut store, stdout, stderr) = store(linker.engine(), grant, args);
    let status = async {
        let component = Component::from_file(linker.engine(), app)?;
        let command = wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, &component, linker).await?;
        command.wasi_cli_run().call_run(&mut store).await
    };
    let status = status.await;
    ended(status, stdout, stderr)
}
