//! The component's exports, callable in any wasmtime store: for embedders
//! that bring their own `Engine`, `Linker<T>` and `Store<T>`.
//!
//! An export is looked up on its first call, not when the component is
//! instantiated: an instance created for one request pays for the one
//! export it calls (looking up and type-checking all seven took a third of
//! an instantiation). Its type is checked then too, unless the runtime
//! already checked it on another instance of the same component.

use std::cell::OnceCell;

use anyhow::Context;
use wasmtime::AsContextMut;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Func, Instance, Lift, Linker, Lower, TypedFunc,
};

use crate::CacheError;
use crate::bindings::exported::Error as WitError;

/// The interface the component exports.
const INTERFACE: &str = "tenant-cache:cache/tenant-cache@0.1.0";

/// The functions of [`INTERFACE`].
#[derive(Clone, Copy)]
enum Export {
    Get,
    Set,
    Delete,
    Clear,
    ClearAll,
    GetMany,
    SetMany,
}

impl Export {
    const ALL: [Export; 7] = [
        Export::Get,
        Export::Set,
        Export::Delete,
        Export::Clear,
        Export::ClearAll,
        Export::GetMany,
        Export::SetMany,
    ];

    fn name(self) -> &'static str {
        match self {
            Export::Get => "get",
            Export::Set => "set",
            Export::Delete => "delete",
            Export::Clear => "clear",
            Export::ClearAll => "clear-all",
            Export::GetMany => "get-many",
            Export::SetMany => "set-many",
        }
    }
}

/// Where each function of the interface is in a component: found once per
/// component, by name.
#[derive(Clone)]
pub(crate) struct Exports {
    indices: [ComponentExportIndex; 7],
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
        let index = |export: Export| {
            component
                .get_export_index(Some(&interface), export.name())
                .with_context(|| format!("the component's {INTERFACE} has no `{}`", export.name()))
        };
        let [get, set, delete, clear, clear_all, get_many, set_many] = Export::ALL.map(index);
        Ok(Exports {
            indices: [get?, set?, delete?, clear?, clear_all?, get_many?, set_many?],
            checked: false,
        })
    }
}

/// A call's answer: a trap (outer) or the component's result (inner).
type Answer<R> = wasmtime::Result<Result<R, WitError>>;

/// An export taking `P` and answering `result<R, error>`, once found.
type Call<P, R> = wasmtime::Result<TypedFunc<P, (Result<R, WitError>,)>>;

/// `set`'s parameters: tenant, key, value, ttl.
type SetParams<'a> = (&'a str, &'a str, &'a [u8], Option<u32>);

/// `set-many`'s parameters: tenant, entries, ttl.
type SetManyParams<'a> = (&'a str, &'a [(String, Vec<u8>)], Option<u32>);

/// `get-many`'s answer: one value or miss per key.
type Values = Vec<Option<Vec<u8>>>;

/// An instantiated tenant-cache component.
pub struct Plugin {
    instance: Instance,
    exports: Exports,
    /// Each export, once its first call looked it up (and checked its type).
    funcs: [OnceCell<Func>; 7],
}

/// A call's outcome: a trap (outer) or the component's answer (inner).
fn settle<R>(result: Answer<R>, size: u64) -> Result<R, CacheError> {
    match result {
        Ok(answer) => answer.map_err(|error| CacheError::from_wit(error, size)),
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

    pub(crate) fn new(instance: Instance, exports: Exports) -> Plugin {
        Plugin {
            instance,
            exports,
            funcs: Default::default(),
        }
    }

    /// Looks up and type-checks every export now rather than on its first
    /// call: a component that does not match fails here. Returns the
    /// exports, known to be right for every instance of the component.
    pub(crate) fn check(&self, mut store: impl AsContextMut) -> anyhow::Result<Exports> {
        let check = |result: wasmtime::Result<()>, export: Export| {
            result
                .map_err(anyhow::Error::from)
                .with_context(|| format!("the component's `{}` does not have the expected type", export.name()))
        };
        check(self.get_func(&mut store).map(drop), Export::Get)?;
        check(self.set_func(&mut store).map(drop), Export::Set)?;
        check(self.delete_func(&mut store).map(drop), Export::Delete)?;
        check(self.clear_func(&mut store).map(drop), Export::Clear)?;
        check(self.clear_all_func(&mut store).map(drop), Export::ClearAll)?;
        check(self.get_many_func(&mut store).map(drop), Export::GetMany)?;
        check(self.set_many_func(&mut store).map(drop), Export::SetMany)?;
        Ok(Exports {
            checked: true,
            ..self.exports.clone()
        })
    }

    /// `export` as a function taking `P` and returning `R`. Each export is
    /// only ever asked for with one pair of types, the one of its
    /// `*_func` method below.
    fn func<P, R>(&self, mut store: impl AsContextMut, export: Export) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let cell = &self.funcs[export as usize];
        let index = &self.exports.indices[export as usize];
        let func = match cell.get() {
            Some(func) => *func,
            None if self.exports.checked => {
                let func = (self.instance.get_func(store.as_context_mut(), index))
                    .ok_or_else(|| wasmtime::format_err!("the component has no `{}`", export.name()))?;
                let _ = cell.set(func);
                func
            }
            None => {
                let typed = self.instance.get_typed_func::<P, R>(store.as_context_mut(), index)?;
                let _ = cell.set(*typed.func());
                return Ok(typed);
            }
        };
        // SAFETY: `func` was type-checked against `P` and `R`, on this
        // instance when it was put in its cell (below) or on another
        // instance of the same component (`checked`), and `export` is
        // always asked for with the same types.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }

    fn get_func<'a>(&self, store: impl AsContextMut) -> Call<(&'a str, &'a str), Option<Vec<u8>>> {
        self.func(store, Export::Get)
    }

    fn set_func<'a>(&self, store: impl AsContextMut) -> Call<SetParams<'a>, ()> {
        self.func(store, Export::Set)
    }

    fn delete_func<'a>(&self, store: impl AsContextMut) -> Call<(&'a str, &'a str), ()> {
        self.func(store, Export::Delete)
    }

    fn clear_func<'a>(&self, store: impl AsContextMut) -> Call<(&'a str,), ()> {
        self.func(store, Export::Clear)
    }

    fn clear_all_func(&self, store: impl AsContextMut) -> Call<(), ()> {
        self.func(store, Export::ClearAll)
    }

    fn get_many_func<'a>(&self, store: impl AsContextMut) -> Call<(&'a str, &'a [String]), Values> {
        self.func(store, Export::GetMany)
    }

    fn set_many_func<'a>(&self, store: impl AsContextMut) -> Call<SetManyParams<'a>, ()> {
        self.func(store, Export::SetMany)
    }

    /// Reads `key` of `tenant`; `None` on a miss or after a clear.
    pub fn get(&self, mut store: impl AsContextMut, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let answer = self
            .get_func(&mut store)
            .and_then(|func| func.call(&mut store, (tenant, key)));
        settle(answer.map(|(answer,)| answer), 0)
    }

    /// Stores `value` under `key` of `tenant`; `ttl` in seconds (≥ 1),
    /// `None` to keep it until memcached evicts it.
    pub fn set(
        &self,
        mut store: impl AsContextMut,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        let answer = self
            .set_func(&mut store)
            .and_then(|func| func.call(&mut store, (tenant, key, value, ttl)));
        settle(answer.map(|(answer,)| answer), value.len() as u64)
    }

    /// Removes `key` of `tenant`; removing a missing entry is not an error.
    pub fn delete(&self, mut store: impl AsContextMut, tenant: &str, key: &str) -> Result<(), CacheError> {
        let answer = self
            .delete_func(&mut store)
            .and_then(|func| func.call(&mut store, (tenant, key)));
        settle(answer.map(|(answer,)| answer), 0)
    }

    /// Makes every entry of `tenant` written so far unreachable.
    pub fn clear(&self, mut store: impl AsContextMut, tenant: &str) -> Result<(), CacheError> {
        let answer = self
            .clear_func(&mut store)
            .and_then(|func| func.call(&mut store, (tenant,)));
        settle(answer.map(|(answer,)| answer), 0)
    }

    /// Makes every entry of every tenant of the application unreachable.
    pub fn clear_all(&self, mut store: impl AsContextMut) -> Result<(), CacheError> {
        let answer = self
            .clear_all_func(&mut store)
            .and_then(|func| func.call(&mut store, ()));
        settle(answer.map(|(answer,)| answer), 0)
    }

    /// Reads several keys of one tenant in one round trip.
    pub fn get_many(
        &self,
        mut store: impl AsContextMut,
        tenant: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let answer = self
            .get_many_func(&mut store)
            .and_then(|func| func.call(&mut store, (tenant, keys)));
        settle(answer.map(|(answer,)| answer), 0)
    }

    /// Stores several entries of one tenant in one round trip.
    pub fn set_many(
        &self,
        mut store: impl AsContextMut,
        tenant: &str,
        entries: &[(String, Vec<u8>)],
        ttl: Option<u32>,
    ) -> Result<(), CacheError> {
        let size = entries.iter().map(|(_, value)| value.len() as u64).max().unwrap_or(0);
        let answer = self
            .set_many_func(&mut store)
            .and_then(|func| func.call(&mut store, (tenant, entries, ttl)));
        settle(answer.map(|(answer,)| answer), size)
    }
}
