//! The capability's wasmtime glue: its functions added to a linker, run by
//! the [`Grant`] in the store's data, blocking or async.

use wasmtime::StoreContextMut;
use wasmtime::component::{HasData, Linker};

use super::{Grant, INTERFACE, convert};
use crate::bindings::capability::{Command, Host};

struct HasGrant;

impl HasData for HasGrant {
    type Data<'a> = &'a mut Grant;
}

/// Adds the memcached capability to `linker`: a component instantiated
/// with it reaches the backend of the [`Grant`] that `get` returns from the
/// store's data, and nothing else.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut Grant) -> wasmtime::Result<()> {
    crate::bindings::capability::add_to_linker::<T, HasGrant>(linker, get)
}

/// [`add_to_linker`] for async hosts: the capability's calls wait for
/// memcached without blocking a thread (on the tokio driver), so the
/// component must be called with `call_async` (as [`AsyncTenantCache`]
/// and the `*_async` methods of [`Plugin`] do). Needs a tokio runtime with
/// I/O and time enabled.
///
/// [`AsyncTenantCache`]: crate::AsyncTenantCache
/// [`Plugin`]: crate::Plugin
pub fn add_to_linker_async<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut Grant,
) -> wasmtime::Result<()> {
    let mut interface = linker.instance(INTERFACE)?;
    interface.func_wrap_async(
        "execute",
        move |mut store: StoreContextMut<'_, T>, (route, commands): (String, Vec<Command>)| {
            // Admitted here, on the store's grant; run on a clone (a few
            // reference counts), so the future holds no borrow of the store.
            let grant = get(store.data_mut());
            let mut commands = convert::commands(commands);
            let admitted = grant.admit(&route, &mut commands);
            let grant = grant.clone();
            Box::new(async move {
                let replies = match admitted {
                    Ok(rewrites) => grant.run_async(&route, commands, rewrites).await,
                    Err(error) => Err(error),
                };
                Ok((replies.map(convert::replies).map_err(convert::error),))
            })
        },
    )?;
    interface.func_wrap_async(
        "broadcast",
        move |mut store: StoreContextMut<'_, T>, (commands,): (Vec<Command>,)| {
            let grant = get(store.data_mut());
            let mut commands = convert::commands(commands);
            let admitted = grant.admit_broadcast(&mut commands);
            let grant = grant.clone();
            Box::new(async move {
                let minted = match admitted {
                    Ok(minted) => grant.run_broadcast_async(commands).await.map(|()| minted),
                    Err(error) => Err(error),
                };
                Ok((minted.map_err(convert::error),))
            })
        },
    )?;
    // Randomness, codes, the memo and the binding wait on nothing: the
    // blocking `Host` methods serve the async linker too.
    interface.func_wrap("random-u64", move |mut store: StoreContextMut<'_, T>, (): ()| {
        Ok((Host::random_u64(get(store.data_mut())),))
    })?;
    interface.func_wrap(
        "mac",
        move |mut store: StoreContextMut<'_, T>, (route, message): (String, Vec<u8>)| {
            Ok((Host::mac(get(store.data_mut()), route, message),))
        },
    )?;
    interface.func_wrap(
        "memo-get",
        move |mut store: StoreContextMut<'_, T>, (key,): (String,)| Ok((Host::memo_get(get(store.data_mut()), key),)),
    )?;
    interface.func_wrap(
        "memo-put",
        move |mut store: StoreContextMut<'_, T>, (key, value): (String, Option<Vec<u8>>)| {
            Host::memo_put(get(store.data_mut()), key, value);
            Ok(())
        },
    )?;
    interface.func_wrap("bound-tenant", move |mut store: StoreContextMut<'_, T>, (): ()| {
        Ok((Host::bound_tenant(get(store.data_mut())),))
    })
}
