//! `wasi:keyvalue` for an embedder's own app components, served by the
//! tenant-cache component (`store` and `batch` at `@0.2.0-draft`).
//!
//! The app and a tenant-cache instance live in the same store: the app's
//! `wasi:keyvalue` imports are host functions that forward each call to
//! the tenant-cache instance's `wasi:keyvalue` exports, so the namespacing
//! logic stays in the component (this module only hands calls and bucket
//! handles across). The tenant-cache instance is made on the app's first
//! `open`, with the memcached capability of the store's [`KeyValue`]
//! grant; an app that never opens a bucket never pays for it.
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

use std::sync::Arc;

use anyhow::Context;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Linker, Lower, Resource,
    ResourceAny, ResourceTable, ResourceType, TypedFunc,
};
use wasmtime::{AsContextMut, StoreContextMut};

use crate::bindings::keyvalue_store::{Error, KeyResponse};
use crate::capability::Grant;

/// The `wasi:keyvalue` interfaces served, as apps import them.
const STORE: &str = "wasi:keyvalue/store@0.2.0-draft";
const BATCH: &str = "wasi:keyvalue/batch@0.2.0-draft";

/// Buckets one store may hold open at once: each holds an entry in the
/// host's table and a handle in the component's.
pub const MAX_OPEN_BUCKETS: usize = 10_000;

/// The `wasi:keyvalue` state of one store: the grant the tenant-cache
/// instance is given (bind it to the app's tenant with
/// [`Grant::bound_to`]), that instance once made, and the app's open
/// buckets.
pub struct KeyValue {
    grant: Grant,
    provider: Option<Instance>,
    buckets: ResourceTable,
    open: usize,
}

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

    /// The grant the buckets are served from.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }
}

/// How the host functions find the [`KeyValue`] in a store's data.
pub trait KeyValueView: Send {
    /// This store's `wasi:keyvalue` state.
    fn keyvalue(&mut self) -> &mut KeyValue;
}

/// Adds `wasi:keyvalue/store` and `wasi:keyvalue/batch` at `@0.2.0-draft`
/// to `linker`, served by the tenant-cache component built with this crate
/// (compiled here for the linker's engine) with the grant of each store's
/// [`KeyValue`]. Calls block the thread while memcached answers, as with
/// [`add_to_linker`](crate::add_to_linker).
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

/// An app's bucket: the tenant-cache instance's bucket it stands for.
struct AppBucket(ResourceAny);

/// The exports of the tenant-cache component that the host functions
/// call, as indices into [`EXPORTS`].
const OPEN: usize = 0;
const GET: usize = 1;
const SET: usize = 2;
const DELETE: usize = 3;
const EXISTS: usize = 4;
const LIST_KEYS: usize = 5;
const GET_MANY: usize = 6;
const SET_MANY: usize = 7;
const DELETE_MANY: usize = 8;

/// Each forwarded function: its interface and name, in the app's imports
/// and in the component's exports alike.
const EXPORTS: [(&str, &str); 9] = [
    (STORE, "open"),
    (STORE, "[method]bucket.get"),
    (STORE, "[method]bucket.set"),
    (STORE, "[method]bucket.delete"),
    (STORE, "[method]bucket.exists"),
    (STORE, "[method]bucket.list-keys"),
    (BATCH, "get-many"),
    (BATCH, "set-many"),
    (BATCH, "delete-many"),
];

/// What every host function needs: how to make the tenant-cache instance,
/// where its exports are, and how to call them.
struct Provider<T: 'static> {
    pre: InstancePre<T>,
    exports: [ComponentExportIndex; 9],
    calls: Calls,
}

impl<T: KeyValueView + 'static> Provider<T> {
    /// `component` (tenant-cache, compiled for `engine`), linked with the
    /// capability `calls` asks for.
    fn new(component: &Component, engine: &wasmtime::Engine, calls: Calls) -> anyhow::Result<Provider<T>> {
        let mut linker = Linker::<T>::new(engine);
        fn grant<T: KeyValueView>(data: &mut T) -> &mut Grant {
            &mut data.keyvalue().grant
        }
        match calls {
            Calls::Blocking => crate::capability::add_to_linker(&mut linker, grant::<T>)?,
            Calls::Async => crate::capability::add_to_linker_async(&mut linker, grant::<T>)?,
        }
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the tenant-cache component needs imports this host does not grant")?;
        let find = |(interface, name): (&str, &str)| {
            let parent = component.get_export_index(None, interface);
            component
                .get_export_index(parent.as_ref(), name)
                .with_context(|| format!("the tenant-cache component does not export {interface} `{name}`"))
        };
        let exports = EXPORTS.map(find);
        if let Some(Err(error)) = exports.iter().find(|export| export.is_err()) {
            anyhow::bail!("{error:#}");
        }
        Ok(Provider {
            pre,
            exports: exports.map(|export| export.expect("checked above")),
            calls,
        })
    }

    /// Export `index` of the store's tenant-cache instance (made now if
    /// the store has none yet), typed. The lookup and type check take
    /// well under a microsecond next to a memcached round trip of tens, so
    /// they are not cached.
    async fn func<P, R>(&self, store: &mut StoreContextMut<'_, T>, index: usize) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let instance = match store.data_mut().keyvalue().provider {
            Some(instance) => instance,
            None => {
                let instance = match self.calls {
                    Calls::Blocking => self.pre.instantiate(&mut *store)?,
                    Calls::Async => self.pre.instantiate_async(&mut *store).await?,
                };
                store.data_mut().keyvalue().provider = Some(instance);
                instance
            }
        };
        instance.get_typed_func(store.as_context_mut(), self.exports[index])
    }

    /// Calls export `index` with `args`: a trap (outer) or its answer.
    async fn call<P, R>(&self, store: &mut StoreContextMut<'_, T>, index: usize, args: P) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let func = self.func::<P, R>(store, index).await?;
        match self.calls {
            Calls::Blocking => func.call(&mut *store, args),
            Calls::Async => func.call_async(&mut *store, args).await,
        }
    }

    /// Drops a tenant-cache bucket.
    async fn drop_bucket(&self, store: &mut StoreContextMut<'_, T>, bucket: ResourceAny) -> wasmtime::Result<()> {
        match self.calls {
            Calls::Blocking => bucket.resource_drop(&mut *store),
            Calls::Async => bucket.resource_drop_async(&mut *store).await,
        }
    }
}

/// The tenant-cache bucket behind the app's `bucket`.
fn guest_bucket<T: KeyValueView>(
    store: &mut StoreContextMut<'_, T>,
    bucket: &Resource<AppBucket>,
) -> wasmtime::Result<ResourceAny> {
    Ok(store.data_mut().keyvalue().buckets.get(bucket)?.0)
}

// The host functions: each forwards one call to the same export of the
// tenant-cache instance.

async fn open<T: KeyValueView>(
    provider: Arc<Provider<T>>,
    mut store: StoreContextMut<'_, T>,
    (identifier,): (String,),
) -> wasmtime::Result<(Result<Resource<AppBucket>, Error>,)> {
    let (opened,): (Result<ResourceAny, Error>,) = provider.call(&mut store, OPEN, (identifier.as_str(),)).await?;
    let opened = match opened {
        Ok(opened) => opened,
        Err(error) => return Ok((Err(error),)),
    };
    let state = store.data_mut().keyvalue();
    if state.open >= MAX_OPEN_BUCKETS {
        provider.drop_bucket(&mut store, opened).await?;
        return Ok((Err(Error::Other(format!(
            "this instance holds {MAX_OPEN_BUCKETS} open buckets, the most it may: drop some first"
        ))),));
    }
    state.open += 1;
    Ok((Ok(state.buckets.push(AppBucket(opened))?),))
}

async fn drop_bucket<T: KeyValueView>(
    provider: Arc<Provider<T>>,
    mut store: StoreContextMut<'_, T>,
    rep: u32,
) -> wasmtime::Result<()> {
    let state = store.data_mut().keyvalue();
    let bucket = state.buckets.delete(Resource::<AppBucket>::new_own(rep))?;
    state.open -= 1;
    provider.drop_bucket(&mut store, bucket.0).await
}

/// A host function taking a bucket and a key (or keys, or entries).
macro_rules! on_bucket {
    ($( $name:ident $index:ident ($arg:ident: $ty:ty, $borrowed:ty) -> $ret:ty; )+) => {$(
        async fn $name<T: KeyValueView>(
            provider: Arc<Provider<T>>,
            mut store: StoreContextMut<'_, T>,
            (bucket, $arg): (Resource<AppBucket>, $ty),
        ) -> wasmtime::Result<(Result<$ret, Error>,)> {
            let bucket = guest_bucket(&mut store, &bucket)?;
            provider.call::<(ResourceAny, $borrowed), _>(&mut store, $index, (bucket, &$arg)).await
        }
    )+};
}

on_bucket! {
    get GET (key: String, &str) -> Option<Vec<u8>>;
    delete DELETE (key: String, &str) -> ();
    exists EXISTS (key: String, &str) -> bool;
    list_keys LIST_KEYS (cursor: Option<u64>, &Option<u64>) -> KeyResponse;
    get_many GET_MANY (keys: Vec<String>, &[String]) -> Vec<Option<(String, Vec<u8>)>>;
    set_many SET_MANY (entries: Vec<(String, Vec<u8>)>, &[(String, Vec<u8>)]) -> ();
    delete_many DELETE_MANY (keys: Vec<String>, &[String]) -> ();
}

async fn set<T: KeyValueView>(
    provider: Arc<Provider<T>>,
    mut store: StoreContextMut<'_, T>,
    (bucket, key, value): (Resource<AppBucket>, String, Vec<u8>),
) -> wasmtime::Result<(Result<(), Error>,)> {
    let bucket = guest_bucket(&mut store, &bucket)?;
    provider
        .call::<(ResourceAny, &str, &[u8]), _>(&mut store, SET, (bucket, &key, &value))
        .await
}

/// Registers each host function, blocking or async as `provider` calls.
macro_rules! register {
    ($linker:ident, $provider:ident, $( $interface:ident $name:literal $function:ident ),+) => {$(
        let provider = $provider.clone();
        let mut interface = $linker.instance($interface)?;
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
    let provider = Arc::new(Provider::<T>::new(component, linker.engine(), calls)?);
    {
        let dropping = provider.clone();
        let mut interface = linker.instance(STORE)?;
        let ty = ResourceType::host::<AppBucket>();
        match calls {
            // A bucket's drop never waits on memcached: the blocking path
            // serves both.
            Calls::Blocking => interface.resource("bucket", ty, move |store, rep| {
                pollster::block_on(drop_bucket(dropping.clone(), store, rep))
            })?,
            Calls::Async => interface.resource_async("bucket", ty, move |store, rep| {
                Box::new(drop_bucket(dropping.clone(), store, rep))
            })?,
        }
    }
    register!(
        linker, provider,
        STORE "open" open,
        STORE "[method]bucket.get" get,
        STORE "[method]bucket.set" set,
        STORE "[method]bucket.delete" delete,
        STORE "[method]bucket.exists" exists,
        STORE "[method]bucket.list-keys" list_keys,
        BATCH "get-many" get_many,
        BATCH "set-many" set_many,
        BATCH "delete-many" delete_many
    );
    Ok(())
}
