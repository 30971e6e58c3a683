//! Workloads whose every answer is checked: each tenant's calls in a
//! random order, every value unique to the tenant and the step, every read
//! checked against what the tenant may hold (more than one value after a
//! write whose caller gave up on it or saw it fail).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tenant_cache_host::{AsyncTenantCache, Backend, CacheError, Grant, TenantCache};

use crate::runtime;

/// A fresh async instance of the application `app`.
pub async fn instance(backend: &Backend) -> anyhow::Result<AsyncTenantCache> {
    runtime().instantiate_async(Grant::new(backend.clone(), "app")).await
}

/// A small deterministic generator, one per task.
pub struct Steps(u64);

impl Steps {
    /// A generator seeded by the tenant's name.
    pub fn for_tenant(tenant: &str) -> Steps {
        Steps(0x9e37_79b9_7f4a_7c15 ^ hash(tenant))
    }

    /// A number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What a tenant's keys may hold: every value a get may see for each key
/// (more than one after a write whose caller gave up on it).
#[derive(Default)]
pub struct Model(BTreeMap<String, BTreeSet<Option<Vec<u8>>>>);

impl Model {
    fn may_hold(&self, key: &str) -> BTreeSet<Option<Vec<u8>>> {
        self.0.get(key).cloned().unwrap_or_else(|| BTreeSet::from([None]))
    }

    fn wrote(&mut self, key: &str, value: Option<Vec<u8>>, surely: bool) {
        let mut possible = match surely {
            true => BTreeSet::new(),
            false => self.may_hold(key),
        };
        possible.insert(value);
        self.0.insert(key.to_owned(), possible);
    }

    fn check(&self, tenant: &str, key: &str, got: &Option<Vec<u8>>) {
        let possible = self.may_hold(key);
        assert!(
            possible.contains(got),
            "{tenant}/{key}: got {:?}, may hold {:?}",
            got.as_deref().map(String::from_utf8_lossy),
            possible
                .iter()
                .map(|value| value.as_deref().map(String::from_utf8_lossy))
                .collect::<Vec<_>>()
        );
    }
}

/// The keys a workload uses.
pub const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// One call of a workload.
pub enum Op {
    /// Set a key to a value.
    Set(&'static str, Vec<u8>),
    /// Get a key.
    Get(&'static str),
    /// Get every key of [`KEYS`].
    GetMany,
    /// The key and `k3`, both to the value.
    SetMany(&'static str, Vec<u8>),
    /// Delete a key.
    Delete(&'static str),
    /// Clear the tenant.
    Clear,
}

/// What a call read: each key and its value.
pub type Reads = Vec<(&'static str, Option<Vec<u8>>)>;

impl Op {
    /// A random call of `tenant`'s `step`: every value unique to the
    /// tenant and the step (a reply meant for another caller could not
    /// pass for it), `size` bytes at most beyond its name.
    pub fn random(rng: &mut Steps, tenant: &str, step: usize, size: usize) -> Op {
        let key = KEYS[rng.next(4) as usize];
        let mut value = format!("{tenant}:{step}:").into_bytes();
        value.resize(value.len() + rng.next(size as u64 + 1) as usize, b'.');
        match rng.next(10) {
            0..=2 => Op::Set(key, value),
            3..=5 => Op::Get(key),
            6 => Op::GetMany,
            7 => Op::SetMany(key, value),
            8 => Op::Delete(key),
            _ => Op::Clear,
        }
    }

    fn keys() -> Vec<String> {
        KEYS.iter().map(|key| key.to_string()).collect()
    }

    /// Runs the call on an async instance.
    pub async fn run_async(&self, cache: &mut AsyncTenantCache, tenant: &str) -> Result<Reads, CacheError> {
        match self {
            Op::Set(key, value) => cache.set(tenant, key, value, None).await.map(|()| Vec::new()),
            Op::Get(key) => Ok(vec![(*key, cache.get(tenant, key).await?)]),
            Op::GetMany => Ok(KEYS
                .into_iter()
                .zip(cache.get_many(tenant, &Op::keys()).await?)
                .collect()),
            Op::SetMany(key, value) => {
                let entries = vec![(key.to_string(), value.clone()), ("k3".to_owned(), value.clone())];
                cache.set_many(tenant, &entries, None).await.map(|()| Vec::new())
            }
            Op::Delete(key) => cache.delete(tenant, key).await.map(|()| Vec::new()),
            Op::Clear => cache.clear(tenant).await.map(|()| Vec::new()),
        }
    }

    /// Runs the call on a blocking instance.
    pub fn run(&self, cache: &mut TenantCache, tenant: &str) -> Result<Reads, CacheError> {
        match self {
            Op::Set(key, value) => cache.set(tenant, key, value, None).map(|()| Vec::new()),
            Op::Get(key) => Ok(vec![(*key, cache.get(tenant, key)?)]),
            Op::GetMany => Ok(KEYS.into_iter().zip(cache.get_many(tenant, &Op::keys())?).collect()),
            Op::SetMany(key, value) => {
                let entries = vec![(key.to_string(), value.clone()), ("k3".to_owned(), value.clone())];
                cache.set_many(tenant, &entries, None).map(|()| Vec::new())
            }
            Op::Delete(key) => cache.delete(tenant, key).map(|()| Vec::new()),
            Op::Clear => cache.clear(tenant).map(|()| Vec::new()),
        }
    }
}

impl Model {
    /// Checks what a call read, and takes in what it wrote (`surely`:
    /// its caller saw it done; otherwise it may or may not have been).
    pub fn after(&mut self, tenant: &str, op: Op, reads: &Reads, surely: bool) {
        for (key, got) in reads {
            self.check(tenant, key, got);
        }
        match op {
            Op::Set(key, value) => self.wrote(key, Some(value), surely),
            Op::SetMany(key, value) => {
                self.wrote(key, Some(value.clone()), surely);
                self.wrote("k3", Some(value), surely);
            }
            Op::Delete(key) => self.wrote(key, None, surely),
            Op::Clear => {
                for key in KEYS {
                    self.wrote(key, None, surely);
                }
            }
            Op::Get(_) | Op::GetMany => {}
        }
    }
}

/// One tenant's calls in a random order, each checked against what the
/// tenant may hold. `give_up`: the chance in 100 that a call is abandoned
/// after a random 0–3 ms; its instance is then replaced.
pub async fn workload(
    backend: Backend,
    tenant: String,
    steps: usize,
    give_up: u64,
    size: usize,
    done: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let mut cache = instance(&backend).await?;
    let mut model = Model::default();
    let mut rng = Steps::for_tenant(&tenant);
    for step in 0..steps {
        let op = Op::random(&mut rng, &tenant, step, size);
        let abandon = rng.next(100) < give_up;
        let within = Duration::from_micros(rng.next(3000));
        let outcome = match abandon {
            true => tokio::time::timeout(within, op.run_async(&mut cache, &tenant))
                .await
                .ok(),
            false => Some(op.run_async(&mut cache, &tenant).await),
        };
        let surely = outcome.is_some();
        let reads = outcome.transpose()?.unwrap_or_default();
        if !surely {
            // The store may hold a call dropped mid-way: a new instance.
            cache = instance(&backend).await?;
        }
        model.after(&tenant, op, &reads, surely);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// [`workload`] on a blocking instance; with `unavailable_allowed`, a call
/// may fail as unavailable (its writes then may or may not have been
/// applied). Returns how many calls failed so.
pub fn workload_blocking(
    backend: &Backend,
    tenant: &str,
    steps: usize,
    size: usize,
    unavailable_allowed: bool,
) -> anyhow::Result<usize> {
    let mut cache = crate::cache(backend, "app")?;
    let mut model = Model::default();
    let mut rng = Steps::for_tenant(tenant);
    let mut unavailable = 0;
    for step in 0..steps {
        let op = Op::random(&mut rng, tenant, step, size);
        match op.run(&mut cache, tenant) {
            Ok(reads) => model.after(tenant, op, &reads, true),
            Err(CacheError::Unavailable(_)) if unavailable_allowed => {
                unavailable += 1;
                model.after(tenant, op, &Vec::new(), false);
            }
            Err(error) => return Err(anyhow::anyhow!("{tenant} step {step}: {error}")),
        }
    }
    Ok(unavailable)
}

/// FNV-1a of `text`.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}
