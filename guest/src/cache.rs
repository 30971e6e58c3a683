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
//!   and is redone with the versions just read. An instance that has not
//!   seen the tenant yet proposes versions with `add` and only `add`s the
//!   entry, so a guess never replaces an entry someone else made visible.
//! - `clear` stores a fresh random tenant version, `clear-all` a fresh
//!   random application version on every server: one command each, so no
//!   interleaving of readers and writers can undo them.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::batch::{Batch, Reply};
use crate::bindings::exports::tenant_cache::cache::tenant_cache::{Error, TooLarge};
use crate::bindings::tenant_cache::cache::memcached::{CasItem, Command, Error as CapabilityError, Item, Replies};
use crate::frame::{HEADER_LEN, Stored, frame, unframe};
use crate::versions::{VersionCache, Versions};
use tenant_cache_layout::parts::encode_part;
use tenant_cache_layout::records::{APP_RECORD, ReadKeys, data_record, tenant_record};
use tenant_cache_layout::version::{parse_record, record_value};

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
    /// The same batch on every server.
    fn broadcast(&self, commands: &[Command<'_>]) -> Result<(), CapabilityError>;
    /// A fresh random value.
    fn random_u64(&self) -> u64;
    /// What the host's memo holds under `key`.
    fn memo_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Puts `value` under `key` in the host's memo (`None` forgets it).
    fn memo_put(&self, key: &str, value: Option<&[u8]>);
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

/// A version record to write before an entry: its key, the record, and
/// whether to `add` it (where missing) rather than `set` it (over
/// something that is not a version).
type Proposal<'a> = (&'a str, Vec<u8>, bool);

impl<C: Capability> Cache<C> {
    /// A cache over `capability` with nothing remembered yet.
    pub fn new(capability: C) -> Self {
        Cache {
            capability,
            versions: VersionCache::default(),
            counters: KnownCounters::default(),
        }
    }

    /// Versions for a tenant whose version `records` (application, tenant,
    /// whose key is `tenant_key`) are not both versions: the ones read,
    /// and fresh ones for the others, with the writes that propose them
    /// (`add` where missing: the read-back after them names the real ones
    /// if they exist; `set` over something that is not a version, which
    /// hides what was written under it).
    fn propose<'k>(&self, records: [Record; 2], tenant_key: &'k str) -> (Versions, Vec<Proposal<'k>>) {
        let mut proposals = Vec::new();
        let mut propose = |record: Record, key: &'k str| match record {
            Record::Version(version) => version,
            Record::Missing | Record::Corrupt => {
                let fresh = self.capability.random_u64();
                proposals.push((key, record_value(fresh), record == Record::Missing));
                fresh
            }
        };
        let versions = Versions {
            app: propose(records[0], APP_RECORD),
            tenant: propose(records[1], tenant_key),
        };
        (versions, proposals)
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

    /// Takes the replies to [`versions_first`]'s commands (with
    /// `proposals` proposals) off the front of `batch`: the version records
    /// of `tenant` (its part) read, now remembered.
    fn read_versions_first(&mut self, tenant: &str, proposals: usize, batch: &mut Batch) -> Result<[Record; 2], Error> {
        for _ in 0..proposals {
            expect_reply(batch, 0)?;
        }
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
        self.write(&tenant, &tenant_record(&tenant), &records, ttl, &[])
    }

    /// Stores one entry: one round trip in steady state.
    pub fn set(&mut self, tenant: &str, key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), Error> {
        check_ttl(ttl)?;
        let keys = ReadKeys::new(tenant, key);
        self.write(
            keys.tenant(),
            keys.tenant_record(),
            &[(keys.data_record(), value)],
            ttl,
            &[],
        )
    }

    /// Writes `entries` (data record, value) of the tenant whose part is
    /// `tenant` and whose version record is `tenant_key`; `also` goes in
    /// the same batch, after them.
    fn write(
        &mut self,
        tenant: &str,
        tenant_key: &str,
        entries: &[(&str, &[u8])],
        ttl: Option<u32>,
        also: &[Command<'_>],
    ) -> Result<(), Error> {
        // What the last attempt read of each record, if anything.
        let mut last: Option<[Record; 2]> = None;
        let largest = entries.iter().map(|(_, value)| value.len() as u64).max().unwrap_or(0);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            // With guessed versions, entries are only `add`ed: a guess must
            // never overwrite an entry another writer made visible. The
            // memo is asked on the first attempt only: a redo knows better.
            let (seen, known_app) = match last {
                None => (self.recall(tenant), self.recall_app()),
                Some(_) => (self.versions.get(tenant), self.versions.app()),
            };
            let guessed = seen.is_none();
            // Versions unknown: propose versions for the records not known
            // to hold one.
            let (tag, proposals) = match seen {
                Some(seen) => (seen, Vec::new()),
                None => self.propose(
                    last.unwrap_or([known_app.map_or(Record::Missing, Record::Version), Record::Missing]),
                    tenant_key,
                ),
            };
            let frames: Vec<Vec<u8>> = entries.iter().map(|(_, value)| frame(tag, value)).collect();
            let mut commands = Vec::with_capacity(proposals.len() + entries.len() + 2);
            for (key, record, add) in &proposals {
                commands.push(store(key, record, None, *add));
            }
            for ((key, _), framed) in entries.iter().zip(&frames) {
                commands.push(store(key, framed, ttl, guessed));
            }
            commands.extend(also.iter().cloned());
            commands.push(Command::Get(APP_RECORD));
            commands.push(Command::Get(tenant_key));
            let replies = self
                .capability
                .execute(tenant, &commands)
                .map_err(|error| from_capability(error, largest))?;
            let mut batch = Batch::new(replies);
            if batch.remaining() != commands.len() {
                return Err(Error::Internal(String::from("memcached host returned too few replies")));
            }
            for _ in &proposals {
                expect_reply(&mut batch, 0)?;
            }
            let mut all_stored = true;
            for (_, value) in entries {
                let stored = expect_reply(&mut batch, value.len() as u64)?;
                all_stored &= matches!(stored, Reply::Done);
            }
            for _ in also {
                expect_reply(&mut batch, 0)?;
            }
            let records = read_records(&mut batch)?;
            let current = self.learn(tenant, records);
            last = Some(records);
            if current == Some(tag) && all_stored {
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
        let fresh = self.capability.random_u64();
        let (key, record) = (tenant_record(&tenant), record_value(fresh));
        let replies = self
            .capability
            .execute(&tenant, &[store(&key, &record, None, false)])
            .map_err(|error| from_capability(error, 0))?;
        match expect_reply(&mut Batch::new(replies), 0)? {
            Reply::Done => {
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
        let fresh = self.capability.random_u64();
        let record = record_value(fresh);
        self.capability
            .broadcast(&[store(APP_RECORD, &record, None, false)])
            .map_err(|error| from_capability(error, 0))?;
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

/// The front of a batch that writes under the versions it reads first:
/// the writes that propose versions (`proposals`, from [`Cache::propose`]),
/// then the reads of both version records (the tenant's is `tenant_key`).
/// [`Cache::read_versions_first`] takes their replies.
fn versions_first<'a>(proposals: &'a [Proposal<'a>], tenant_key: &'a str) -> Vec<Command<'a>> {
    let mut commands: Vec<Command<'a>> = proposals
        .iter()
        .map(|(key, record, add)| store(key, record, None, *add))
        .collect();
    commands.extend([Command::Get(APP_RECORD), Command::Get(tenant_key)]);
    commands
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
    /// Something that is not a version record (written by someone else).
    Corrupt,
}

/// Takes the application and tenant version replies off the front.
fn read_records(batch: &mut Batch) -> Result<[Record; 2], Error> {
    let mut record = || -> Result<Record, Error> {
        Ok(match expect_reply(batch, 0)? {
            Reply::Value(range) => batch
                .values()
                .get(range)
                .and_then(parse_record)
                .map_or(Record::Corrupt, Record::Version),
            _ => Record::Missing,
        })
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
        CapabilityError::OverLimit(limit) => Error::OverLimit(limit),
        CapabilityError::Denied(message) => Error::Internal(alloc::format!("host denied a command: {message}")),
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
