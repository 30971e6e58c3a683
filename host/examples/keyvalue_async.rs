//! Serving `wasi:keyvalue` to your own app components, on tokio: your
//! Engine, your WASI, your store data; the app's buckets live inside the
//! tenant its store is bound to.
//! Run: cargo run --release --example keyvalue_async -- 127.0.0.1:11211 visits.wasm acme ana
//! (the app: the README's visits app, or any wasip2 command using wasi:keyvalue)
use tenant_cache_host::keyvalue::{self, KeyValue, KeyValueView};
use tenant_cache_host::{Backend, Grant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Your store data: WASI, and the app's `wasi:keyvalue`.
struct AppState {
    wasi: WasiCtx,
    table: ResourceTable,
    keyvalue: KeyValue,
}

impl WasiView for AppState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl KeyValueView for AppState {
    fn keyvalue(&mut self) -> &mut KeyValue {
        &mut self.keyvalue
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [memcached, app, customer, app_args @ ..] = &args[..] else {
        anyhow::bail!("usage: keyvalue_async HOST:PORT APP.wasm TENANT [ARGS...]");
    };
    // Once per process: the engine, the linker, the memcached client.
    let engine = Engine::default();
    let mut linker = Linker::<AppState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    keyvalue::add_to_linker_async(&mut linker)?;
    let backend = Backend::memcached(&[memcached.as_str()], Default::default())?;
    let component = Component::from_file(&engine, app)?;

    // Per request: the customer whose app runs is the tenant.
    let grant = Grant::new(backend.clone(), "shop").bound_to(customer);
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdout().inherit_stderr().arg(app).args(app_args);
    let state = AppState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        keyvalue: KeyValue::new(grant),
    };
    let mut store = Store::new(&engine, state);
    let command = Command::instantiate_async(&mut store, &component, &linker).await?;
    let ran = command.wasi_cli_run().call_run(&mut store).await?;
    std::process::exit(if ran.is_ok() { 0 } else { 1 })
}
