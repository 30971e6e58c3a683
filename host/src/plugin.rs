//! The component's exports, callable in any wasmtime store (embedders
//! bring their own `Engine`, `Linker<T>` and `Store<T>`). Each export is
//! looked up on its first call rather than at every instantiation as
//! bindgen's `PluginPre` does (docs/architecture.md, "Calling the exports").

use std::sync::OnceLock;

use anyhow::Context;
use wasmtime::AsContextMut;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Func, Instance, Lift, Linker, Lower, TypedFunc,
};

use crate::CacheError;
use crate::bindings::exported::{
    Error as WitError, LeaseOptions as WitLeaseOptions, Lookup as WitLookup, Swappable as WitSwappable,
};
use crate::calls::{LeaseOptions, LeaseToken, Lookup, SwapToken, Swappable};

/// The interface the component exports.
const INTERFACE: &str = "tenant-cache:cache/tenant-cache@0.8.0";

/// The number of functions in [`INTERFACE`].
const FUNCTIONS: usize = 13;

/// Where each function of the interface is in a component: found once per
/// component, by name.
#[derive(Clone)]
pub(crate) struct Exports {
    indices: [ComponentExportIndex; FUNCTIONS],
    /// Whether the functions' types were checked on an instance of this
    /// component (then they are right on every instance of it).
    checked: bool,
}

impl Exports {
    /// The exports of `component`; an error names the first one missing.
    pub(crate) fn of(component: &Component) -> anyhow::Result<Exports> {
        let interface = component
            .get_export_index(None, INTERFACE)
            .with_context(|| format!("the component does not export {INTERFACE}"))?;
        let index = |name: &str| {
            component
                .get_export_index(Some(&interface), name)
                .with_context(|| format!("the component's {INTERFACE} has no `{name}`"))
        };
        let indices = NAMES.map(index);
        if let Some(Err(error)) = indices.iter().find(|index| index.is_err()) {
            anyhow::bail!("{error:#}");
        }
        Ok(Exports {
            indices: indices.map(|index| index.expect("checked above")),
            checked: false,
        })
    }
}

/// An instantiated tenant-cache component.
pub struct Plugin {
    instance: Instance,
    exports: Exports,
    /// Each export, once its first call looked it up (and checked its type).
    funcs: [OnceLock<Func>; FUNCTIONS],
}

/// A call's outcome: a trap (outer) or the component's answer (inner).
fn settle<R>(result: wasmtime::Result<(Result<R, WitError>,)>) -> Result<R, CacheError> {
    match result {
        Ok((answer,)) => answer.map_err(CacheError::from),
        Err(trap) => {
            let interrupted = trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt);
            let trap = anyhow::Error::from(trap);
            Err(CacheError::Trap(match interrupted {
                true => trap.context("it ran past its call deadline and was stopped"),
                false => trap,
            }))
        }
    }
}

impl Plugin {
    /// Instantiates `component` in `store`; `linker` must hold the
    /// capability (see [`add_to_linker`](crate::add_to_linker)).
    pub fn instantiate<T: 'static>(
        mut store: impl AsContextMut<Data = T>,
        component: &Component,
        linker: &Linker<T>,
    ) -> anyhow::Result<Plugin> {
        let exports = Exports::of(component)?;
        let instance = linker
            .instantiate(&mut store, component)
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        Ok(Plugin::new(instance, exports))
    }

    /// [`instantiate`](Self::instantiate) for async hosts: `linker` holds
    /// the capability of [`add_to_linker_async`](crate::add_to_linker_async),
    /// and the calls are the `*_async` methods.
    pub async fn instantiate_async<T: Send + 'static>(
        mut store: impl AsContextMut<Data = T>,
        component: &Component,
        linker: &Linker<T>,
    ) -> anyhow::Result<Plugin> {
        let exports = Exports::of(component)?;
        let instance = linker
            .instantiate_async(&mut store, component)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the component")?;
        Ok(Plugin::new(instance, exports))
    }

    pub(crate) fn new(instance: Instance, exports: Exports) -> Plugin {
        Plugin {
            instance,
            exports,
            funcs: Default::default(),
        }
    }

    /// Export number `index` as a function taking `P` and answering
    /// `result<R, error>`. The [`exports!`] table below is the only caller,
    /// and asks for each export with the one pair of types its line names.
    fn typed<P, R>(
        &self,
        mut store: impl AsContextMut,
        index: usize,
    ) -> wasmtime::Result<TypedFunc<P, (Result<R, WitError>,)>>
    where
        P: ComponentNamedList + Lower,
        (Result<R, WitError>,): ComponentNamedList + Lift,
    {
        let cell = &self.funcs[index];
        let export = &self.exports.indices[index];
        let func = match cell.get() {
            Some(func) => *func,
            None if self.exports.checked => {
                let func = (self.instance.get_func(store.as_context_mut(), export))
                    .ok_or_else(|| wasmtime::format_err!("the component has no `{}`", NAMES[index]))?;
                let _ = cell.set(func);
                func
            }
            None => {
                let typed = self.instance.get_typed_func(store.as_context_mut(), export)?;
                let _ = cell.set(*typed.func());
                return Ok(typed);
            }
        };
        // SAFETY: `func` was type-checked against `P` and `R`, on this
        // instance when it was put in its cell (above) or on another
        // instance of the same component (`checked`, by `check`), and
        // export `index` is only ever asked for with these types.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }
}

/// The exports, each with its index, method, WIT name and signature,
/// written once: the typed methods and the type check come from this table.
macro_rules! exports {
    ($( $(#[doc = $doc:literal])* $index:literal $vis:vis $method:ident $method_async:ident $name:literal ($($arg:ident: $ty:ty),*) -> $ret:ty; )+) => {
        /// The names of the functions of [`INTERFACE`], by index.
        const NAMES: [&str; FUNCTIONS] = [$($name),+];

        impl Plugin {
            /// Looks up and type-checks every export now rather than on its
            /// first call: a component that does not match fails here.
            /// Returns the exports, known to be right for every instance of
            /// the component.
            pub(crate) fn check(&self, mut store: impl AsContextMut) -> anyhow::Result<Exports> {
                $(
                    self.typed::<($($ty,)*), $ret>(&mut store, $index)
                        .map_err(anyhow::Error::from)
                        .with_context(|| format!("the component's `{}` does not have the expected type", $name))?;
                )+
                Ok(Exports { checked: true, ..self.exports.clone() })
            }

            $(
                $(#[doc = $doc])*
                $vis fn $method(&self, mut store: impl AsContextMut, $($arg: $ty),*) -> Result<$ret, CacheError> {
                    settle(
                        self.typed::<($($ty,)*), $ret>(&mut store, $index)
                            .and_then(|func| func.call(&mut store, ($($arg,)*))),
                    )
                }

                $(#[doc = $doc])*
                ///
                /// For stores whose linker holds async host functions (see
                /// [`add_to_linker_async`](crate::add_to_linker_async)).
                $vis async fn $method_async(
                    &self,
                    mut store: impl AsContextMut<Data: Send>,
                    $($arg: $ty),*
                ) -> Result<$ret, CacheError> {
                    let func = self.typed::<($($ty,)*), $ret>(&mut store, $index);
                    settle(match func {
                        Ok(func) => func.call_async(&mut store, ($($arg,)*)).await,
                        Err(error) => Err(error),
                    })
                }
            )+
        }
    };
}

exports! {
    /// Reads `key` of `tenant`; `None` on a miss or after a clear.
    0 pub get get_async "get" (tenant: &str, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key` of `tenant`; `ttl` in seconds (≥ 1),
    /// `None` to keep it until memcached evicts it.
    1 pub set set_async "set" (tenant: &str, key: &str, value: &[u8], ttl: Option<u32>) -> ();
    /// Removes `key` of `tenant`; removing a missing entry is not an error.
    2 pub delete delete_async "delete" (tenant: &str, key: &str) -> ();
    /// Makes every entry of `tenant` written so far unreachable.
    3 pub clear clear_async "clear" (tenant: &str) -> ();
    /// Makes every entry of every tenant of the application unreachable.
    4 pub clear_all clear_all_async "clear-all" () -> ();
    /// Reads several keys of one tenant in one round trip.
    5 pub get_many get_many_async "get-many" (tenant: &str, keys: &[String]) -> Vec<Option<Vec<u8>>>;
    /// Stores several entries of one tenant in one round trip.
    6 pub set_many set_many_async "set-many" (tenant: &str, entries: &[(String, Vec<u8>)], ttl: Option<u32>) -> ();
    /// `get-or-lease`, in the WIT's types ([`Plugin::get_or_lease`]).
    7 get_or_lease_wit get_or_lease_wit_async "get-or-lease" (tenant: &str, key: &str, options: WitLeaseOptions) -> WitLookup;
    /// `fill`, in the WIT's types ([`Plugin::fill`]).
    8 fill_wit fill_wit_async "fill" (tenant: &str, key: &str, value: &[u8], ttl: Option<u32>, token: &str) -> bool;
    /// Adds `delta` to the counter under `key` of `tenant` (made at 0 if
    /// missing or cleared) and returns the new count, atomically.
    9 pub increment increment_async "increment" (tenant: &str, key: &str, delta: i64) -> i64;
    /// `get-for-swap`, in the WIT's types ([`Plugin::get_for_swap`]).
    10 get_for_swap_wit get_for_swap_wit_async "get-for-swap" (tenant: &str, key: &str) -> WitSwappable;
    /// `compare-and-swap`, in the WIT's types ([`Plugin::compare_and_swap`]).
    11 compare_and_swap_wit compare_and_swap_wit_async "compare-and-swap" (tenant: &str, key: &str, value: &[u8], token: &str) -> bool;
    /// `release`, in the WIT's types ([`Plugin::release`]).
    12 release_wit release_wit_async "release" (tenant: &str, key: &str, token: &str) -> ();
}

impl Plugin {
    /// Reads `key` of `tenant`; on a miss, hands this caller the lease to
    /// compute the value ([`Lookup::Lease`]), or says another caller holds
    /// it. One round trip for a hit, two for a miss.
    pub fn get_or_lease(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        key: &str,
        options: &LeaseOptions,
    ) -> Result<Lookup, CacheError> {
        self.get_or_lease_wit(store, tenant, key, options.wit())
            .map(Lookup::from)
    }

    /// [`get_or_lease`](Self::get_or_lease) for stores whose linker holds
    /// async host functions.
    pub async fn get_or_lease_async(
        &self,
        store: impl AsContextMut<Data: Send>,
        tenant: &str,
        key: &str,
        options: &LeaseOptions,
    ) -> Result<Lookup, CacheError> {
        let found = self.get_or_lease_wit_async(store, tenant, key, options.wit()).await;
        found.map(Lookup::from)
    }

    /// Stores the value the holder of `token` computed for `key` of
    /// `tenant` over its lease, in one round trip: whether it is now the
    /// entry (`false`: the lease is no longer this caller's, the key was
    /// written since it was taken, or the tenant was cleared since).
    pub fn fill(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
        token: &LeaseToken,
    ) -> Result<bool, CacheError> {
        self.fill_wit(store, tenant, key, value, ttl, token.as_str())
    }

    /// Gives the lease `token` back (its holder could not compute the
    /// value), so the next reader takes it at once.
    pub fn release(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        key: &str,
        token: &LeaseToken,
    ) -> Result<(), CacheError> {
        self.release_wit(store, tenant, key, token.as_str())
    }

    /// [`release`](Self::release) for stores whose linker holds async host
    /// functions.
    pub async fn release_async(
        &self,
        store: impl AsContextMut<Data: Send>,
        tenant: &str,
        key: &str,
        token: &LeaseToken,
    ) -> Result<(), CacheError> {
        self.release_wit_async(store, tenant, key, token.as_str()).await
    }

    /// Reads `key` of `tenant` as [`get`](Self::get) does, with the token
    /// to replace it by [`compare_and_swap`](Self::compare_and_swap).
    pub fn get_for_swap(&self, store: impl AsContextMut, tenant: &str, key: &str) -> Result<Swappable, CacheError> {
        self.get_for_swap_wit(store, tenant, key).map(Swappable::from)
    }

    /// [`get_for_swap`](Self::get_for_swap) for stores whose linker holds
    /// async host functions.
    pub async fn get_for_swap_async(
        &self,
        store: impl AsContextMut<Data: Send>,
        tenant: &str,
        key: &str,
    ) -> Result<Swappable, CacheError> {
        self.get_for_swap_wit_async(store, tenant, key)
            .await
            .map(Swappable::from)
    }

    /// Stores `value` under `key` of `tenant` if nothing changed the entry
    /// since `token` was read: whether it did. One round trip.
    pub fn compare_and_swap(
        &self,
        store: impl AsContextMut,
        tenant: &str,
        key: &str,
        value: &[u8],
        token: &SwapToken,
    ) -> Result<bool, CacheError> {
        self.compare_and_swap_wit(store, tenant, key, value, token.as_str())
    }

    /// [`compare_and_swap`](Self::compare_and_swap) for stores whose linker
    /// holds async host functions.
    pub async fn compare_and_swap_async(
        &self,
        store: impl AsContextMut<Data: Send>,
        tenant: &str,
        key: &str,
        value: &[u8],
        token: &SwapToken,
    ) -> Result<bool, CacheError> {
        self.compare_and_swap_wit_async(store, tenant, key, value, token.as_str())
            .await
    }

    /// [`fill`](Self::fill) for stores whose linker holds async host
    /// functions.
    pub async fn fill_async(
        &self,
        store: impl AsContextMut<Data: Send>,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
        token: &LeaseToken,
    ) -> Result<bool, CacheError> {
        self.fill_wit_async(store, tenant, key, value, ttl, token.as_str())
            .await
    }
}
