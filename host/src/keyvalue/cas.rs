//! `wasi:keyvalue/atomics@0.2.0-draft2`'s compare-and-swap, forwarded to
//! the tenant-cache instance: the app's `cas` handles stand for the
//! component's, in the same table and under the same bound as buckets, and
//! a `cas-failed` error's fresh handle becomes a fresh app handle.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, Lift, Linker, Lower, Resource, ResourceAny, ResourceType,
};

use super::{
    AppBucket, Calls, Draft2, Interface, KeyValueView, MAX_OPEN_BUCKETS, Provider, Version, all_found, draft2, find,
    guest_bucket,
};

/// An app's compare-and-swap handle (`@0.2.0-draft2`): the tenant-cache
/// instance's handle it stands for.
struct AppCas(ResourceAny);

/// The compare-and-swap functions of `@0.2.0-draft2`'s `atomics`, as
/// indices into `Provider::cas`.
const CAS_NEW: usize = 0;
const CAS_CURRENT: usize = 1;
const SWAP: usize = 2;
/// How many there are.
pub(super) const FUNCTIONS: usize = 3;
const CAS_FUNCTIONS: [&str; FUNCTIONS] = ["[static]cas.new", "[method]cas.current", "swap"];

/// `cas-error` as the component returns it: its own handle on failure.
#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
enum ProviderCasError {
    #[component(name = "store-error")]
    StoreError(draft2::Error),
    #[component(name = "cas-failed")]
    CasFailed(ResourceAny),
}

/// `cas-error` as the app receives it: the app's handle on failure.
#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
enum AppCasError {
    #[component(name = "store-error")]
    StoreError(draft2::Error),
    #[component(name = "cas-failed")]
    CasFailed(Resource<AppCas>),
}

/// Where `@0.2.0-draft2`'s compare-and-swap functions are among
/// `component`'s exports.
pub(super) fn exports(component: &Component) -> anyhow::Result<[ComponentExportIndex; FUNCTIONS]> {
    all_found(CAS_FUNCTIONS.map(|name| find(component, Draft2::ATOMICS, name)))
}

async fn cas_new<T: KeyValueView>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    (bucket, key): (Resource<AppBucket<Draft2>>, String),
) -> wasmtime::Result<(Result<Resource<AppCas>, draft2::Error>,)> {
    let bucket = guest_bucket(&mut store, &bucket)?;
    let (made,): (Result<ResourceAny, draft2::Error>,) = provider
        .call_export(&mut store, provider.cas[CAS_NEW], (bucket, key.as_str()))
        .await?;
    Ok((match made {
        Ok(handle) => app_cas(&provider, &mut store, handle).await?,
        Err(error) => Err(error),
    },))
}

/// The app's handle for the component's compare-and-swap `handle`, within
/// the same bound on open handles as buckets: past it, an error the app
/// can act on (drop some), not a trap.
async fn app_cas<T: KeyValueView>(
    provider: &Provider,
    store: &mut StoreContextMut<'_, T>,
    handle: ResourceAny,
) -> wasmtime::Result<Result<Resource<AppCas>, draft2::Error>> {
    let state = store.data_mut().keyvalue();
    if state.open >= MAX_OPEN_BUCKETS {
        provider.drop_handle(store, handle).await?;
        return Ok(Err(draft2::Error::Other(format!(
            "this instance holds {MAX_OPEN_BUCKETS} open buckets and compare-and-swap handles, the most it may: drop \
             some first"
        ))));
    }
    state.open += 1;
    Ok(Ok(state.buckets.push(AppCas(handle))?))
}

async fn cas_current<T: KeyValueView>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    (cas,): (Resource<AppCas>,),
) -> wasmtime::Result<(Result<Option<Vec<u8>>, draft2::Error>,)> {
    let handle = store.data_mut().keyvalue().buckets.get(&cas)?.0;
    provider
        .call_export(&mut store, provider.cas[CAS_CURRENT], (handle,))
        .await
}

async fn swap<T: KeyValueView>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    (cas, value): (Resource<AppCas>, Vec<u8>),
) -> wasmtime::Result<(Result<(), AppCasError>,)> {
    let state = store.data_mut().keyvalue();
    let handle = state.buckets.delete(cas)?.0;
    state.open -= 1;
    let (swapped,): (Result<(), ProviderCasError>,) = provider
        .call_export(&mut store, provider.cas[SWAP], (handle, value.as_slice()))
        .await?;
    Ok((match swapped {
        Ok(()) => Ok(()),
        Err(ProviderCasError::StoreError(error)) => Err(AppCasError::StoreError(error)),
        Err(ProviderCasError::CasFailed(fresh)) => match app_cas(&provider, &mut store, fresh).await? {
            Ok(fresh) => Err(AppCasError::CasFailed(fresh)),
            Err(error) => Err(AppCasError::StoreError(error)),
        },
    },))
}

async fn drop_cas<T: KeyValueView>(
    provider: Arc<Provider>,
    mut store: StoreContextMut<'_, T>,
    rep: u32,
) -> wasmtime::Result<()> {
    let state = store.data_mut().keyvalue();
    let handle = state.buckets.delete(Resource::<AppCas>::new_own(rep))?;
    state.open -= 1;
    provider.drop_handle(&mut store, handle.0).await
}

/// `@0.2.0-draft2`'s compare-and-swap, on `provider`.
pub(super) fn add_to_linker<T: KeyValueView + 'static>(
    linker: &mut Linker<T>,
    provider: &Arc<Provider>,
) -> anyhow::Result<()> {
    type V = Draft2;
    {
        let dropping = provider.clone();
        let mut interface = linker.instance(V::ATOMICS)?;
        let ty = ResourceType::host::<AppCas>();
        match provider.calls {
            Calls::Blocking => interface.resource("cas", ty, move |store, rep| {
                pollster::block_on(drop_cas::<T>(dropping.clone(), store, rep))
            })?,
            Calls::Async => interface.resource_async("cas", ty, move |store, rep| {
                Box::new(drop_cas::<T>(dropping.clone(), store, rep))
            })?,
        }
    }
    register!(
        linker, provider,
        Atomics "[static]cas.new" cas_new::<T>,
        Atomics "[method]cas.current" cas_current::<T>,
        Atomics "swap" swap::<T>
    );
    Ok(())
}
