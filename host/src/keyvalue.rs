//! `wasi:keyvalue` for an embedder's own app components, served by the
//! tenant-cache component: `store`, `atomics` and `batch` at
//! `@0.2.0-draft` (wasmtime's `-S keyvalue`, wasmCloud, wrpc) and
//! `@0.2.0-draft2` (Spin's SDK, with its compare-and-swap), both on the
//! same buckets.
//!
//! The app's `wasi:keyvalue` imports are host functions that forward each
//! call to the `wasi:keyvalue` exports of a tenant-cache instance, so the
//! namespacing logic stays in the component (this module only hands calls,
//! and bucket and compare-and-swap handles, across). That instance is made
//! on the app's first `open`, with the memcached capability of the store's
//! [`KeyValue`] grant, in a store of its own that the app's store holds
//! (an app that never opens a bucket never pays for it). Its own store,
//! not the app's: a host function may not call back into its caller's
//! store once wasmtime runs calls concurrently (component-model async, a
//! default feature of wasmtime, which a default [`Config`](wasmtime::Config)
//! turns on), so sharing one would work only on engines with
//! `concurrency_support(false)`. Apart from the app's store, the instance
//! has its own limits: 64 MiB of memory, no deadline or fuel of the app's
//! (it does a bounded amount of work per call, and waits on memcached
//! within the grant's own deadlines).
//!
//! ```no_run
//! use tenant_cache_host::keyvalue::{self, KeyValue, KeyValueView};
//! use tenant_cache_host::{Backend, Grant};
//! use wasmtime::component::{Component, Linker};
//! use wasmtime::{Engine, Store};
//!
//! struct App {
//!     keyvalue: KeyValue,
//!     // ... the embedder's WASI context and anything else
//! }
//!
//! impl KeyValueView for App {
//!     fn keyvalue(&mut self) -> &mut KeyValue {
//!         &mut self.keyvalue
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let engine = Engine::default();
//! let mut linker = Linker::<App>::new(&engine);
//! keyvalue::add_to_linker(&mut linker)?; // next to the embedder's WASI
//! let backend = Backend::memcached(&["127.0.0.1:11211"], Default::default())?;
//! // One customer's app: the customer is the tenant.
//! let grant = Grant::new(backend, "shop").bound_to("acme");
//! let mut store = Store::new(&engine, App { keyvalue: KeyValue::new(grant) });
//! let app = Component::from_file(&engine, "app.wasm")?;
//! let instance = linker.instantiate(&mut store, &app)?;
//! # Ok(())
//! # }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use anyhow::Context;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, ComponentType, Instance, InstancePre, Lift, Linker, Lower,
    Resource, ResourceAny, ResourceTable, ResourceType, TypedFunc,
};
use wasmtime::{Store, StoreContextMut};

use crate::bindings::{keyvalue_draft as draft, keyvalue_draft2 as draft2};
use crate::capability::Grant;
use crate::instances::State;

/// Buckets and compare-and-swap handles one store may hold open at once:
/// each holds an entry in the host's table and a handle in the component's.
pub const MAX_OPEN_BUCKETS: usize = 10_000;

/// The `wasi:keyvalue` state of one store: the grant the tenant-cache
/// instance is given (bind it to the app's tenant with
/// [`Grant::bound_to`]), that instance once made, and the app's open
/// buckets.
pub struct KeyValue {
    grant: Grant,
    provider: Option<Provided>,
    buckets: ResourceTable,
    open: usize,
}

/// The tenant-cache instance serving one app's store, in a store of its
/// own.
struct Provided {
    store: Store<State>,
    instance: Instance,
}

/// The most memory the tenant-cache instance of one app's store may use:
/// [`RuntimeOptions`](crate::RuntimeOptions)' default.
const PROVIDER_MEMORY: usize = 64 * 1024 * 1024;

impl KeyValue {
    /// `wasi:keyvalue` served from `grant`.
    pub fn new(grant: Grant) -> KeyValue {
        KeyValue {
            grant,
            provider: None,
            buckets: ResourceTable::new(),
            open: 0,
        }
    }

    /// The grant the buckets are served from (the tenant-cache instance
    /// takes a clone of it on the app's first `open`): also what to grant
    /// an app composed with tenant-cache ahead of time, which imports the
    /// capability itself (`tenant_cache_host::add_to_linker(&mut linker,
    /// |data| data.keyvalue().grant_mut())`).
    pub fn grant_mut(&mut self) -> &mut Grant {
        &mut self.grant
    }
}

/// How the host functions find the [`KeyValue`] in a store's data.
pub trait KeyValueView: Send {
    /// This store's `wasi:keyvalue` state.
    fn keyvalue(&mut self) -> &mut KeyValue;
}

/// Adds `wasi:keyvalue/store`, `wasi:keyvalue/atomics` and
/// `wasi:keyvalue/batch` at `@0.2.0-draft` and `@0.2.0-draft2` to
/// `linker`, served by the tenant-cache component built with this crate
/// (compiled here for the linker's engine) with the grant of each store's
/// [`KeyValue`]. Calls block the thread while
/// memcached answers, as with [`add_to_linker`](crate::add_to_linker).
pub fn add_to_linker<T: KeyValueView + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    let component = compile(linker.engine())?;
    add_component_to_linker(linker, &component, Calls::Blocking)
}

/// [`add_to_linker`] for async hosts: apps must be called with
/// `call_async`, and memcached is waited for without blocking a thread (on
/// the tokio driver, as with [`add_to_linker_async`](crate::add_to_linker_async)).
pub fn add_to_linker_async<T: KeyValueView + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    let component = compile(linker.engine())?;
    add_component_to_linker(linker, &component, Calls::Async)
}

/// The component built with this crate, for `engine`.
fn compile(engine: &wasmtime::Engine) -> anyhow::Result<Component> {
    crate::precompiled::compile(engine, crate::COMPONENT)
}

/// How the app's `wasi:keyvalue` calls reach memcached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    /// Blocking the thread, for apps called with `call` (as
    /// [`add_to_linker`]).
    Blocking,
    /// Without blocking a thread, for apps called with `call_async` (as
    /// [`add_to_linker_async`]).
    Async,
}

/// A version of `wasi:keyvalue` served: the interfaces' names and the
/// types that differ between versions (the WIT types come from `bindgen!`
/// of the component's world, so the host checks the same types the
/// component exports).
trait Version: Send + Sync + 'static {
    /// The index of this version's exports in [`Provider::exports`].
    const SLOT: usize;
    const STORE: &'static str;
    const ATOMICS: &'static str;
    const BATCH: &'static str;
    /// What `increment` adds and returns.
    type Count: ComponentType + Lift + Lower + Send + Sync + 'static;
    type Error: ComponentType + Lift + Lower + Send + Sync + 'static;
    type Cursor: ComponentType + Lift + Lower + Send + Sync + 'static;
    type KeyResponse: ComponentType + Lift + Lower + Send + Sync + 'static;
    /// The error for `text`.
    fn other(text: String) -> Self::Error;

    /// The name of `interface` in this version.
    fn interface(interface: Interface) -> &'static str {
        match interface {
            Interface::Store => Self::STORE,
            Interface::Atomics => Self::ATOMICS,
            Interface::Batch => Self::BATCH,
        }
    }
}

/// `@0.2.0-draft`: wasmtime's `-S keyvalue`, wasmCloud, wrpc.
struct Draft;

impl Version for Draft {
    const SLOT: usize = 0;
    const STORE: &'static str = "wasi:keyvalue/store@0.2.0-draft";
    const ATOMICS: &'static str = "wasi:keyvalue/atomics@0.2.0-draft";
    const BATCH: &'static str = "wasi:keyvalue/batch@0.2.0-draft";
    type Count = u64;
    type Error = draft::Error;
    type Cursor = Option<u64>;
    type KeyResponse = draft::KeyResponse;
    fn other(text: String) -> draft::Error {
        draft::Error::Other(text)
    }
}

/// `@0.2.0-draft2`: Spin's SDK. `list-keys`'s cursor differs, `increment`
/// is signed, and `atomics` adds compare-and-swap.
struct Draft2;

impl Version for Draft2 {
    const SLOT: usize = 1;
    const STORE: &'static str = "wasi:keyvalue/store@0.2.0-draft2";
    const ATOMICS: &'static str = "wasi:keyvalue/atomics@0.2.0-draft2";
    const BATCH: &'static str = "wasi:keyvalue/batch@0.2.0-draft2";
    type Count = i64;
    type Error = draft2::Error;
    type Cursor = Option<String>;
    type KeyResponse = draft2::KeyResponse;
    fn other(text: String) -> draft2::Error {
        draft2::Error::Other(text)
    }
}

/// An app's bucket (of version `V`): the tenant-cache instance's bucket it
/// stands for.
struct AppBucket<V>(ResourceAny, PhantomData<V>);

/// The exports of the tenant-cache component that the host functions
/// call, as indices into [`FUNCTIONS`].
const OPEN: usize = 0;
const GET: usize = 1;
const SET: usize = 2;
const DELETE: usize = 3;
const EXISTS: usize = 4;
const LIST_KEYS: usize = 5;
const GET_MANY: usize = 6;
const SET_MANY: usize = 7;
const DELETE_MANY: usize = 8;
const INCREMENT: usize = 9;

/// The interface of a forwarded function.
#[derive(Clone, Copy)]
enum Interface {
    Store,
    Atomics,
    Batch,
}

/// Each forwarded function: its interface, and its name, in the app's
/// imports and in the component's exports alike.
const FUNCTIONS: [(Interface, &str); 10] = [
    (Interface::Store, "open"),
    (Interface::Store, "[method]bucket.get"),
    (Interface::Store, "[method]bucket.set"),
    (Interface::Store, "[method]bucket.delete"),
    (Interface::Store, "[method]bucket.exists"),
    (Interface::Store, "[method]bucket.list-keys"),
    (Interface::Batch, "get-many"),
    (Interface::Batch, "set-many"),
    (Interface::Batch, "delete-many"),
    (Interface::Atomics, "increment"),
];

/// What every host function needs: how to make the tenant-cache instance,
/// where its exports are (per version, and compare-and-swap's), and how to
/// call them.
struct Provider {
    pre: InstancePre<State>,
    exports: [[ComponentExportIndex; 10]; 2],
    cas: [ComponentExportIndex; cas::FUNCTIONS],
    calls: Calls,
}

impl Provider {
    /// `component` (tenant-cache, compiled for `engine`), linked with the
    /// capability `calls` asks for.
    fn new(component: &Component, engine: &wasmtime::Engine, calls: Calls) -> anyhow::Result<Provider> {
        let mut linker = Linker::<State>::new(engine);
        fn grant(state: &mut State) -> &mut Grant {
            &mut state.grant
        }
        match calls {
            Calls::Blocking => crate::capability::add_to_linker(&mut linker, grant)?,
            Calls::Async => crate::capability::add_to_linker_async(&mut linker, grant)?,
        }
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the tenant-cache component needs imports this host does not grant")?;
        Ok(Provider {
            pre,
            exports: [exports::<Draft>(component)?, exports::<Draft2>(component)?],
            cas: cas::exports(component)?,
            calls,
        })
    }

    /// The tenant-cache instance of the app's store, made now if it has
    /// none yet.
    async fn provided<'a>(&self, state: &'a mut KeyValue) -> wasmtime::Result<&'a mut Provided> {
        if state.provider.is_none() {
            let mut store = crate::instances::store(self.pre.engine(), state.grant.clone(), PROVIDER_MEMORY);
            let instance = match self.calls {
                Calls::Blocking => self.pre.instantiate(&mut store)?,
                Calls::Async => self.pre.instantiate_async(&mut store).await?,
            };
            state.provider = Some(Provided { store, instance });
        }
        Ok(state.provider.as_mut().expect("made above"))
    }

    /// Calls export `index` of version `V` with `args`: a trap (outer) or
    /// its answer.
    async fn call<V: Version, T: KeyValueView, P, R>(
        &self,
        store: &mut StoreContextMut<'_, T>,
        index: usize,
        args: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        self.call_export(store, self.exports[V::SLOT][index], args).await
    }

    /// Calls `export` of the app's tenant-cache instance with `args`: a
    /// trap (outer) or its answer. The export is looked up and its type
    /// checked on every call: caching it would take an unchecked
    /// `TypedFunc` (as `plugin.rs` does, for a measured reason), and no
    /// measure here asked for it next to the call's memcached round trip.
    async fn call_export<T: KeyValueView, P, R>(
        &self,
        store: &mut StoreContextMut<'_, T>,
        export: ComponentExportIndex,
        args: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let Provided { store, instance } = self.provided(store.data_mut().keyvalue()).await?;
        let func: TypedFunc<P, R> = instance.get_typed_func(&mut *store, export)?;
        match self.calls {
            Calls::Blocking => func.call(store, args),
            Calls::Async => func.call_async(store, args).await,
        }
    }

    /// Drops a handle of the tenant-cache instance's (a bucket, or a
    /// compare-and-swap handle).
    async fn drop_handle<T: KeyValueView>(
        &self,
        store: &mut StoreContextMut<'_, T>,
        handle: ResourceAny,
    ) -> wasmtime::Result<()> {
        let Provided { store, .. } = self.provided(store.data_mut().keyvalue()).await?;
        match self.calls {
            Calls::Blocking => handle.resource_drop(store),
            Calls::Async => handle.resource_drop_async(store).await,
        }
    }
}

/// Where the functions of version `V` are among `component`'s exports; an
/// error names the first one missing.
fn exports<V: Version>(component: &Component) -> anyhow::Result<[ComponentExportIndex; 10]> {
    all_found(FUNCTIONS.map(|(interface, name)| find(component, V::interface(interface), name)))
}

/// Where function `name` of `interface` is among `component`'s exports.
fn find(component: &Component, interface: &str, name: &str) -> anyhow::Result<ComponentExportIndex> {
    let parent = component.get_export_index(None, interface);
    component
        .get_export_index(parent.as_ref(), name)
        .with_context(|| format!("the tenant-cache component does not export {interface} `{name}`"))
}

/// Every export found, or the error of the first one missing.
fn all_found<const N: usize>(
    exports: [anyhow::Result<ComponentExportIndex>; N],
) -> anyhow::Result<[ComponentExportIndex; N]> {
    if let Some(Err(error)) = exports.iter().find(|export| export.is_err()) {
        anyhow::bail!("{error:#}");
    }
    Ok(exports.map(|export| export.expect("checked above")))
}

/// The tenant-cache bucket behind the app's `bucket`.
fn guest_bucket<T: KeyValueView, V: Version>(
    store: &mut StoreContextMut<'_, T>,
    bucket: &Resource<AppBucket<V>>,
) -> wasmtime::Result<ResourceAny> {
    Ok(store.data_mut().keyvalue().buckets.get(bucket)?.0)
}

// The host functions: each forwards one call to the same export of the
// tenant-cache instance.

async fn open<T: KeyValueView, V: Version>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    (identifier,): (String,),
) -> wasmtime::Result<(Result<Resource<AppBucket<V>>, V::Error>,)> {
    let (opened,): (Result<ResourceAny, V::Error>,) = provider
        .call::<V, T, _, _>(&mut store, OPEN, (identifier.as_str(),))
        .await?;
    let opened = match opened {
        Ok(opened) => opened,
        Err(error) => return Ok((Err(error),)),
    };
    let state = store.data_mut().keyvalue();
    if state.open >= MAX_OPEN_BUCKETS {
        provider.drop_handle(&mut store, opened).await?;
        return Ok((Err(V::other(format!(
            "this instance holds {MAX_OPEN_BUCKETS} open buckets, the most it may: drop some first"
        ))),));
    }
    state.open += 1;
    Ok((Ok(state.buckets.push(AppBucket(opened, PhantomData))?),))
}

async fn drop_bucket<T: KeyValueView, V: Version>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    rep: u32,
) -> wasmtime::Result<()> {
    let state = store.data_mut().keyvalue();
    let bucket = state.buckets.delete(Resource::<AppBucket<V>>::new_own(rep))?;
    state.open -= 1;
    provider.drop_handle(&mut store, bucket.0).await
}

/// A host function taking a bucket and one more argument, which the
/// component takes borrowed.
macro_rules! on_bucket {
    ($( $name:ident $index:ident ($arg:ident: $ty:ty, $borrowed:ty) -> $ret:ty; )+) => {$(
        async fn $name<T: KeyValueView, V: Version>(
            provider: Arc<Provider>,
            mut store: StoreContextMut<'_, T>,
            (bucket, $arg): (Resource<AppBucket<V>>, $ty),
        ) -> wasmtime::Result<(Result<$ret, V::Error>,)> {
            let bucket = guest_bucket(&mut store, &bucket)?;
            provider.call::<V, T, (ResourceAny, $borrowed), _>(&mut store, $index, (bucket, &$arg)).await
        }
    )+};
}

on_bucket! {
    get GET (key: String, &str) -> Option<Vec<u8>>;
    delete DELETE (key: String, &str) -> ();
    exists EXISTS (key: String, &str) -> bool;
    list_keys LIST_KEYS (cursor: V::Cursor, &V::Cursor) -> V::KeyResponse;
    get_many GET_MANY (keys: Vec<String>, &[String]) -> Vec<Option<(String, Vec<u8>)>>;
    set_many SET_MANY (entries: Vec<(String, Vec<u8>)>, &[(String, Vec<u8>)]) -> ();
    delete_many DELETE_MANY (keys: Vec<String>, &[String]) -> ();
}

async fn increment<T: KeyValueView, V: Version>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    (bucket, key, delta): (Resource<AppBucket<V>>, String, V::Count),
) -> wasmtime::Result<(Result<V::Count, V::Error>,)> {
    let bucket = guest_bucket(&mut store, &bucket)?;
    provider
        .call::<V, T, (ResourceAny, &str, V::Count), _>(&mut store, INCREMENT, (bucket, &key, delta))
        .await
}

async fn set<T: KeyValueView, V: Version>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    (bucket, key, value): (Resource<AppBucket<V>>, String, Vec<u8>),
) -> wasmtime::Result<(Result<(), V::Error>,)> {
    let bucket = guest_bucket(&mut store, &bucket)?;
    provider
        .call::<V, T, (ResourceAny, &str, &[u8]), _>(&mut store, SET, (bucket, &key, &value))
        .await
}

/// Registers each host function of version `V`, blocking or async as
/// `provider` calls.
macro_rules! register {
    ($linker:ident, $provider:ident, $( $interface:ident $name:literal $function:expr ),+) => {$(
        let provider = $provider.clone();
        let mut interface = $linker.instance(V::interface(Interface::$interface))?;
        match provider.calls {
            Calls::Blocking => interface.func_wrap($name, move |store, params| {
                pollster::block_on($function(provider.clone(), store, params))
            })?,
            Calls::Async => interface.func_wrap_async($name, move |store, params| {
                Box::new($function(provider.clone(), store, params))
            })?,
        }
    )+};
}

/// [`add_to_linker`] or [`add_to_linker_async`] with a tenant-cache
/// `component` of the embedder's (e.g. `tenant-cache.wasm` loaded with
/// [`Component::from_file`]) compiled for the linker's engine.
pub fn add_component_to_linker<T: KeyValueView + 'static>(
    linker: &mut Linker<T>,
    component: &Component,
    calls: Calls,
) -> anyhow::Result<()> {
    let provider = Arc::new(Provider::new(component, linker.engine(), calls)?);
    add_version::<T, Draft>(linker, &provider)?;
    add_version::<T, Draft2>(linker, &provider)?;
    cas::add_to_linker::<T>(linker, &provider)
}

/// The host functions of version `V`, on `provider`.
fn add_version<T: KeyValueView + 'static, V: Version>(
    linker: &mut Linker<T>,
    provider: &Arc<Provider>,
) -> anyhow::Result<()> {
    {
        let dropping = provider.clone();
        let mut interface = linker.instance(V::STORE)?;
        let ty = ResourceType::host::<AppBucket<V>>();
        match provider.calls {
            // Dropping waits on nothing: the blocking path serves both.
            Calls::Blocking => interface.resource("bucket", ty, move |store, rep| {
                pollster::block_on(drop_bucket::<T, V>(dropping.clone(), store, rep))
            })?,
            Calls::Async => interface.resource_async("bucket", ty, move |store, rep| {
                Box::new(drop_bucket::<T, V>(dropping.clone(), store, rep))
            })?,
        }
    }
    register!(
        linker, provider,
        Store "open" open::<T, V>,
        Store "[method]bucket.get" get::<T, V>,
        Store "[method]bucket.set" set::<T, V>,
        Store "[method]bucket.delete" delete::<T, V>,
        Store "[method]bucket.exists" exists::<T, V>,
        Store "[method]bucket.list-keys" list_keys::<T, V>,
        Batch "get-many" get_many::<T, V>,
        Batch "set-many" set_many::<T, V>,
        Batch "delete-many" delete_many::<T, V>,
        Atomics "increment" increment::<T, V>
    );
    Ok(())
}

// After `register!`, which it uses.
mod cas;
