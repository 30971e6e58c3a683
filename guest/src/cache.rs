//! The namespacing algorithm, over any [`Capability`].
//!
//! Records of one tenant all live on the server its route picks:
//! - `a`: the application version (one copy per server),
//! - `n:<tenant>`: the tenant version,
//! - `d:<tenant>:<key>`: entries, framed with the versions they were
//!   written under.
//!
//! Versions are random 64-bit values, written only as fresh randoms (never
//! restored from memory), so a version that was moved away from never
//! comes back, even when a record is evicted or the server restarts.
//! - `get` reads both versions and the entry in one batch: the entry is a
//!   hit only if it was written under the current versions.
//! - `set` writes the entry tagged with the versions last seen and reads
//!   the versions in the same batch, after the write. If they match, the
//!   entry was reachable at that moment; if not, the write only hid itself
//!   and is redone with the versions just read. An instance that knows no
//!   versions for the tenant reads them first, creating those that are
//!   missing and repairing those that hold something else (see
//!   [`Cache::establish`]).
//! - `clear` stores a fresh random tenant version, `clear-all` a fresh
//!   random application version on every server: one command each, so no
//!   interleaving of readers and writers can undo them.
//!
//! Every version is drawn by the host as it is stored (`new-version`), so
//! no component knows one before it is current, and a version record is
//! only ever overwritten by a clear: a record that is missing is created
//! where it still is (`create`), one holding something else is replaced
//! only if it still holds what was read (`replace`, by its CAS value).
//! Nothing read or handed back by a caller is ever written as a version.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::batch::{Batch, Reply};
use crate::bindings::exports::tenant_cache::cache::tenant_cache::{Budget, Error, Limit, OverBudget, TooLarge};
use crate::bindings::tenant_cache::cache::memcached::{
    self as capability, CasItem, Command, Error as CapabilityError, Item, NewVersion, Replies, VersionWrite,
};
use crate::frame::{HEADER_LEN, Stored, frame, unframe};
use crate::tokens::Seal;
use crate::versions::{VersionCache, Versions};
use tenant_cache_layout::parts::encode_part;
use tenant_cache_layout::records::{APP_RECORD, ReadKeys, data_record, tenant_record};
use tenant_cache_layout::version::parse_record;

mod counter;
mod lease;
mod swap;

pub use counter::KnownCounters;
pub use swap::SwapBasis;

/// The reply to the next command of `batch`, which must exist; a failed
/// command is the operation's error (`size`: the size of the value the
/// operation stores, if any).
fn expect_reply(batch: &mut Batch, size: u64) -> Result<Reply, Error> {
    match batch.next_reply() {
        Some(reply) => reply.map_err(|error| from_capability(error, size)),
        None => Err(Error::Internal(String::from("memcached host returned too few replies"))),
    }
}

/// The memcached capability the algorithm runs on.
pub trait Capability {
    /// One pipelined batch on the server that owns `route`.
    fn execute(&self, route: &str, commands: &[Command<'_>]) -> Result<Replies, CapabilityError>;
    /// The same batch on every server: the versions it minted.
    fn broadcast(&self, commands: &[Command<'_>]) -> Result<Vec<u64>, CapabilityError>;
    /// A fresh random value.
    fn random_u64(&self) -> u64;
    /// What the host's memo holds under `key`.
    fn memo_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Puts `value` under `key` in the host's memo (`None` forgets it).
    fn memo_put(&self, key: &str, value: Option<&[u8]>);
    /// The host's code authenticating `message` for `route`.
    fn mac(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, CapabilityError>;
}

impl<C: Capability> Seal for C {
    fn code(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.mac(route, message).map_err(|error| from_capability(error, 0))
    }
}

/// The memo key of the application version. Tenant parts never hold `:`,
/// so no tenant's key (its part) is this one.
const MEMO_APP: &str = ":a";

/// Writes retried at most this often when clears keep moving the versions.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// The tenant cache: a capability plus the versions and counters last
/// seen.
pub struct Cache<C> {
    capability: C,
    versions: VersionCache,
    counters: KnownCounters,
}

impl<C: Capability> Cache<C> {
    /// A cache over `capability` with nothing remembered yet.
    pub fn new(capability: C) -> Self {
        Cache {
            capability,
            versions: VersionCache::default(),
            counters: KnownCounters::default(),
        }
    }

    /// The versions of `tenant` (its part; its version record is
    /// `tenant_key`), now remembered: `records` if they are both versions
    /// (what was last read, or guessed), else made so by `new-version`,
    /// one batch an attempt. A missing record is created (`create`: where
    /// there still is none), one holding something else is replaced only
    /// while it holds what was read (`replace` by its CAS value, read with
    /// it first), and both are read back with their CAS values. Nothing is
    /// ever overwritten on the strength of a read.
    fn establish(&mut self, tenant: &str, tenant_key: &str, mut records: [Record; 2]) -> Result<Versions, Error> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            if let Some(current) = versions(records) {
                return Ok(current);
            }
            let mut commands = Vec::with_capacity(4);
            for (record, key) in records.into_iter().zip([APP_RECORD, tenant_key]) {
                let write = match record {
                    Record::Missing => VersionWrite::Create,
                    Record::Corrupt(Some(cas)) => VersionWrite::Replace(cas),
                    // A version, or something else whose CAS value this
                    // attempt reads first.
                    Record::Version(_) | Record::Corrupt(None) => continue,
                };
                commands.push(Command::NewVersion(NewVersion { key, write }));
            }
            let writes = commands.len();
            commands.extend([Command::GetWithCas(APP_RECORD), Command::GetWithCas(tenant_key)]);
            let mut batch = self.exchange(tenant, &commands, 0)?;
            for _ in 0..writes {
                expect_reply(&mut batch, 0)?;
            }
            records = read_records(&mut batch)?;
            self.learn(tenant, records);
        }
        Err(Error::Contention(String::from(
            "the tenant's namespace versions kept changing (concurrent clears or evictions) while they were read; \
             retry",
        )))
    }

    /// The version records guessed for a tenant nothing is known of: the
    /// application version last seen, if any.
    fn guessed(&self) -> [Record; 2] {
        [
            self.versions.app().map_or(Record::Missing, Record::Version),
            Record::Missing,
        ]
    }

    /// Reads one key: the versions and the entry in one round trip.
    pub fn get(&mut self, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let keys = ReadKeys::new(tenant, key);
        let commands = [
            Command::Get(APP_RECORD),
            Command::Get(keys.tenant_record()),
            Command::Get(keys.data_record()),
        ];
        let (current, mut batch) = self.read(keys.tenant(), &commands)?;
        let entry = expect_reply(&mut batch, 0)?;
        let (Reply::Value(range), Some(current)) = (entry, current) else {
            return Ok(None);
        };
        let values = batch.into_values();
        match values.get(range.clone()).and_then(crate::frame::read) {
            // A counter: its count is read in a second round trip.
            Some(Stored::Counter(made, counter)) if made == current => {
                let counters = [(keys.data_record(), key, counter)];
                Ok(self.read_counts(keys.tenant(), current, &counters)?.pop().flatten())
            }
            _ => Ok(value_if_current(values, range, current)),
        }
    }

    /// Reads several keys of one tenant in one round trip.
    pub fn get_many(&mut self, tenant: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let tenant = encode_part(tenant);
        let tenant_key = tenant_record(&tenant);
        let data_keys: Vec<String> = keys.iter().map(|key| data_record(&tenant, key)).collect();
        let mut commands = Vec::with_capacity(2 + keys.len());
        commands.push(Command::Get(APP_RECORD));
        commands.push(Command::Get(&tenant_key));
        commands.extend(data_keys.iter().map(|key| Command::Get(key)));
        let (current, mut batch) = self.read(&tenant, &commands)?;
        if batch.remaining() < keys.len() {
            return Err(Error::Internal(String::from("memcached host returned too few replies")));
        }
        let mut values = Vec::with_capacity(keys.len());
        // Entries that are counters: where their counts go, and what they are.
        let mut counted = Vec::new();
        let mut counters = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let value = match (expect_reply(&mut batch, 0)?, current) {
                (Reply::Value(range), Some(current)) => match batch.values().get(range).and_then(crate::frame::read) {
                    Some(Stored::Value(written, value)) if written == current => Some(value.to_vec()),
                    Some(Stored::Counter(made, counter)) if made == current => {
                        counted.push(index);
                        counters.push((data_keys[index].as_str(), key.as_str(), counter));
                        None
                    }
                    _ => None,
                },
                _ => None,
            };
            values.push(value);
        }
        if let (Some(current), false) = (current, counters.is_empty()) {
            // Their counts, in a second round trip.
            let counts = self.read_counts(&tenant, current, &counters)?;
            for (index, count) in counted.into_iter().zip(counts) {
                values[index] = count;
            }
        }
        Ok(values)
    }

    /// Takes the replies to [`versions_first`]'s commands off the front of
    /// `batch`: the version records of `tenant` (its part) read, now
    /// remembered.
    fn read_versions_first(&mut self, tenant: &str, batch: &mut Batch) -> Result<[Record; 2], Error> {
        let records = read_records(batch)?;
        self.learn(tenant, records);
        Ok(records)
    }

    /// Runs `commands` on the server of `tenant` (its part), one reply per
    /// command; `size`: the size of the largest value they store.
    fn exchange(&self, tenant: &str, commands: &[Command<'_>], size: u64) -> Result<Batch, Error> {
        let replies = self
            .capability
            .execute(tenant, commands)
            .map_err(|error| from_capability(error, size))?;
        let batch = Batch::new(replies);
        if batch.remaining() != commands.len() {
            return Err(Error::Internal(String::from("memcached host returned too few replies")));
        }
        Ok(batch)
    }

    /// Runs a read on the server of `tenant` (its part): `commands` start
    /// with the application and tenant version reads. Returns the versions
    /// read, now remembered for the tenant, and the replies after them.
    fn read(&mut self, tenant: &str, commands: &[Command<'_>]) -> Result<(Option<Versions>, Batch), Error> {
        let replies = self
            .capability
            .execute(tenant, commands)
            .map_err(|error| from_capability(error, 0))?;
        let mut batch = Batch::new(replies);
        let current = self.learn(tenant, read_records(&mut batch)?);
        Ok((current, batch))
    }

    /// Remembers the version records of `tenant` (its part) just read, and
    /// puts what is news into the host's memo for other instances. Returns
    /// the current versions.
    fn learn(&mut self, tenant: &str, [app, tenant_version]: [Record; 2]) -> Option<Versions> {
        // The application version is worth knowing even when the tenant
        // has none yet: the tenant's first write then proposes only its own.
        if let Record::Version(app) = app {
            if self.versions.app() != Some(app) {
                self.capability.memo_put(MEMO_APP, Some(&app.to_le_bytes()));
            }
            self.versions.saw_app(app);
        }
        let known = self.versions.get(tenant).map(|versions| versions.tenant);
        let read = match tenant_version {
            Record::Version(version) => Some(version),
            _ => None,
        };
        if known != read {
            let bytes = read.map(u64::to_le_bytes);
            self.capability.memo_put(tenant, bytes.as_ref().map(|bytes| &bytes[..]));
        }
        let current = versions([app, tenant_version]);
        self.versions.put(tenant, current);
        current
    }

    /// The versions of `tenant` (its part) this instance knows, or else
    /// the ones the host's memo recalls (another instance read them).
    fn recall(&mut self, tenant: &str) -> Option<Versions> {
        if let Some(known) = self.versions.get(tenant) {
            return Some(known);
        }
        let app = self.recall_app()?;
        let tenant_version = memo_version(self.capability.memo_get(tenant))?;
        let recalled = Versions {
            app,
            tenant: tenant_version,
        };
        self.versions.put(tenant, Some(recalled));
        Some(recalled)
    }

    /// The application version this instance knows, or else the one the
    /// host's memo recalls.
    fn recall_app(&mut self) -> Option<u64> {
        if let Some(app) = self.versions.app() {
            return Some(app);
        }
        let app = memo_version(self.capability.memo_get(MEMO_APP))?;
        self.versions.saw_app(app);
        Some(app)
    }

    /// Stores several entries of one tenant: one round trip in steady state.
    pub fn set_many(&mut self, tenant: &str, entries: &[(String, Vec<u8>)], ttl: Option<u32>) -> Result<(), Error> {
        check_ttl(ttl)?;
        let tenant = encode_part(tenant);
        let keys: Vec<String> = entries.iter().map(|(key, _)| data_record(&tenant, key)).collect();
        let records: Vec<(&str, &[u8])> = keys
            .iter()
            .zip(entries)
            .map(|(key, (_, value))| (key.as_str(), value.as_slice()))
            .collect();
        self.write(&tenant, &tenant_record(&tenant), &records, ttl)
    }

    /// Stores one entry: one round trip in steady state.
    pub fn set(&mut self, tenant: &str, key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), Error> {
        check_ttl(ttl)?;
        let keys = ReadKeys::new(tenant, key);
        self.write(keys.tenant(), keys.tenant_record(), &[(keys.data_record(), value)], ttl)
    }

    /// Writes `entries` (data record, value) of the tenant whose part is
    /// `tenant` and whose version record is `tenant_key`, each framed with
    /// the versions last seen (or recalled, or established), and reads the
    /// versions back in the same batch: redone with the versions read when
    /// they moved meanwhile.
    fn write(
        &mut self,
        tenant: &str,
        tenant_key: &str,
        entries: &[(&str, &[u8])],
        ttl: Option<u32>,
    ) -> Result<(), Error> {
        let largest = entries.iter().map(|(_, value)| value.len() as u64).max().unwrap_or(0);
        // The memo is asked on the first attempt only: a redo knows better.
        let mut seen = self.recall(tenant);
        let mut last = self.guessed();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let tag = match seen {
                Some(seen) => seen,
                None => self.establish(tenant, tenant_key, last)?,
            };
            let frames: Vec<Vec<u8>> = entries.iter().map(|(_, value)| frame(tag, value)).collect();
            let mut commands = Vec::with_capacity(entries.len() + 2);
            for ((key, _), framed) in entries.iter().zip(&frames) {
                commands.push(store(key, framed, ttl, false));
            }
            commands.extend(versions_first(tenant_key));
            let mut batch = self.exchange(tenant, &commands, largest)?;
            let mut all_stored = true;
            for (_, value) in entries {
                let stored = expect_reply(&mut batch, value.len() as u64)?;
                all_stored &= matches!(stored, Reply::Done);
            }
            last = self.read_versions_first(tenant, &mut batch)?;
            seen = versions(last);
            if seen == Some(tag) && all_stored {
                return Ok(());
            }
        }
        Err(Error::Contention(String::from(
            "the tenant's namespace kept moving (concurrent clears or evictions) while writing; retry",
        )))
    }

    /// Removes one entry: one command.
    pub fn delete(&mut self, tenant: &str, key: &str) -> Result<(), Error> {
        self.delete_many(tenant, &[key])
    }

    /// Removes several entries of one tenant: one command each, in one
    /// round trip (none for no keys).
    pub fn delete_many(&mut self, tenant: &str, keys: &[impl AsRef<str>]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let tenant = encode_part(tenant);
        let records: Vec<String> = keys.iter().map(|key| data_record(&tenant, key.as_ref())).collect();
        let commands: Vec<Command<'_>> = records.iter().map(|record| Command::Delete(record)).collect();
        let replies = self
            .capability
            .execute(&tenant, &commands)
            .map_err(|error| from_capability(error, 0))?;
        let mut batch = Batch::new(replies);
        for _ in keys {
            expect_reply(&mut batch, 0)?;
        }
        Ok(())
    }

    /// Moves the tenant version: one command.
    pub fn clear(&mut self, tenant: &str) -> Result<(), Error> {
        let tenant = encode_part(tenant);
        let key = tenant_record(&tenant);
        let clear = Command::NewVersion(NewVersion {
            key: &key,
            write: VersionWrite::Overwrite,
        });
        let mut batch = self.exchange(&tenant, &[clear], 0)?;
        match expect_reply(&mut batch, 0)? {
            Reply::Minted(fresh) => {
                let seen = self
                    .versions
                    .get(&tenant)
                    .map(|seen| Versions { tenant: fresh, ..seen });
                self.versions.put(&tenant, seen);
                self.capability.memo_put(&tenant, Some(&fresh.to_le_bytes()));
                Ok(())
            }
            _ => Err(Error::Internal(String::from("memcached did not confirm the clear"))),
        }
    }

    /// Moves the application version on every server: one command each.
    pub fn clear_all(&mut self) -> Result<(), Error> {
        let clear = Command::NewVersion(NewVersion {
            key: APP_RECORD,
            write: VersionWrite::Overwrite,
        });
        let minted = self
            .capability
            .broadcast(&[clear])
            .map_err(|error| from_capability(error, 0))?;
        let [fresh] = minted[..] else {
            return Err(Error::Internal(String::from("memcached did not confirm the clear")));
        };
        self.versions.move_app(fresh);
        self.capability.memo_put(MEMO_APP, Some(&fresh.to_le_bytes()));
        Ok(())
    }
}

/// A `set` (or with `add`, an `add`) of `value` under `key`.
fn store<'a>(key: &'a str, value: &'a [u8], ttl: Option<u32>, add: bool) -> Command<'a> {
    let item = Item { key, value, ttl };
    if add { Command::Add(item) } else { Command::Set(item) }
}

/// A store of `item` over the item read with CAS value `cas`, or, where
/// none was read (`None`), only where there still is none.
fn replace(item: Item<'_>, cas: Option<u64>) -> Command<'_> {
    match cas {
        Some(cas) => Command::SetIfCas(CasItem { item, cas }),
        None => Command::Add(item),
    }
}

/// The reads of both version records (the tenant's is `tenant_key`), in
/// front of a batch that writes under them, or after one that checks them;
/// [`Cache::read_versions_first`] takes their replies.
fn versions_first(tenant_key: &str) -> [Command<'_>; 2] {
    [Command::Get(APP_RECORD), Command::Get(tenant_key)]
}

/// The caller's bytes of the stored frame at `range` of `values`, if it
/// was written under `current`: cut out of `values` in place.
fn value_if_current(mut values: Vec<u8>, range: Range<usize>, current: Versions) -> Option<Vec<u8>> {
    match unframe(values.get(range.clone())?) {
        Some((written, _)) if written == current => {
            values.truncate(range.end);
            values.drain(..range.start + HEADER_LEN);
            Some(values)
        }
        _ => None,
    }
}

/// What a version record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    Version(u64),
    Missing,
    /// Something that is not a version record (written by someone else),
    /// with its CAS value if it was read with it.
    Corrupt(Option<u64>),
}

/// Takes the application and tenant version replies off the front (read
/// with `get` or `get-with-cas`).
fn read_records(batch: &mut Batch) -> Result<[Record; 2], Error> {
    let mut record = || -> Result<Record, Error> {
        let (range, cas) = match expect_reply(batch, 0)? {
            Reply::Value(range) => (range, None),
            Reply::ValueWithCas(range, cas) => (range, Some(cas)),
            _ => return Ok(Record::Missing),
        };
        Ok(batch
            .values()
            .get(range)
            .and_then(parse_record)
            .map_or(Record::Corrupt(cas), Record::Version))
    };
    Ok([record()?, record()?])
}

/// A version as the memo holds it; `None` for anything else.
fn memo_version(bytes: Option<Vec<u8>>) -> Option<u64> {
    Some(u64::from_le_bytes(bytes?.as_slice().try_into().ok()?))
}

/// The current versions; `None` when either record is missing or not a
/// version (nothing written under it can be trusted then).
fn versions(records: [Record; 2]) -> Option<Versions> {
    match records {
        [Record::Version(app), Record::Version(tenant)] => Some(Versions { app, tenant }),
        _ => None,
    }
}

/// The longest time-to-live accepted: ten years. memcached stores expiry
/// times as 32-bit Unix timestamps, which end in 2106.
const MAX_TTL: u32 = 10 * 365 * 24 * 3600;

fn check_ttl(ttl: Option<u32>) -> Result<(), Error> {
    match ttl {
        Some(0) => Err(Error::InvalidInput(String::from(
            "ttl must be at least 1 second; leave it out to keep the entry until memcached evicts it",
        ))),
        Some(secs) if secs > MAX_TTL => Err(Error::InvalidInput(alloc::format!(
            "ttl must be at most {MAX_TTL} seconds (ten years), not {secs}; leave it out to keep the entry \
             until memcached evicts it"
        ))),
        _ => Ok(()),
    }
}

/// The one place capability errors become tenant-cache errors; `size` is
/// the size of the value the operation stores (0 for others).
fn from_capability(error: CapabilityError, size: u64) -> Error {
    match error {
        CapabilityError::Unavailable(message) => Error::Unavailable(message),
        CapabilityError::ValueTooLarge(limit) => Error::ValueTooLarge(TooLarge { size, limit }),
        CapabilityError::InvalidKey(message) => Error::Internal(alloc::format!("host refused a key: {message}")),
        CapabilityError::Protocol(message) => Error::Internal(message),
        CapabilityError::OverLimit(limit) => Error::OverLimit(passed_on(limit)),
        CapabilityError::Denied(message) => Error::Internal(alloc::format!("host denied a command: {message}")),
    }
}

/// The capability's limit, passed on as it is (the export defines the
/// same types as the import: `wit/tenant-cache.wit` says why).
fn passed_on(limit: capability::Limit) -> Limit {
    match limit {
        capability::Limit::CommandsPerBatch(most) => Limit::CommandsPerBatch(most),
        capability::Limit::ReplyBytes(most) => Limit::ReplyBytes(most),
        capability::Limit::Budget(over) => Limit::Budget(OverBudget {
            budget: match over.budget {
                capability::Budget::BytesWritten => Budget::BytesWritten,
                capability::Budget::Commands => Budget::Commands,
            },
            per_second: over.per_second,
            burst: over.burst,
            retry_after_ms: over.retry_after_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_value_is_cut_out_in_place() {
        let current = Versions { app: 1, tenant: 2 };
        let mut values = b"0123456789abcdef".to_vec();
        values.extend_from_slice(&frame(current, b"hello"));
        values.extend_from_slice(b"tail");
        let range = 16..16 + HEADER_LEN + 5;
        assert_eq!(
            value_if_current(values.clone(), range.clone(), current),
            Some(b"hello".to_vec())
        );
        let moved = Versions { app: 1, tenant: 3 };
        assert_eq!(value_if_current(values.clone(), range, moved), None);
        assert_eq!(value_if_current(values, 16..9999, current), None);
    }
}
