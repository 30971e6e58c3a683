//! The namespacing algorithm, over any [`Memcached`] capability.
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

use crate::bindings::exports::tenant_cache::cache::tenant_cache::Error;
use crate::bindings::tenant_cache::cache::memcached::{Command, Error as McError, Store};
use crate::frame::{frame, unframe};
use crate::keys::{APP_RECORD, data_record, encode_part, tenant_record};
use crate::versions::{VersionCache, Versions, parse_record, record_value};

/// The outcome of one command of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `get` found the item; its value is this range of the batch's values.
    Value(Range<usize>),
    /// `get` or `delete` found no item.
    Miss,
    /// `set`, `add` or `delete` took effect.
    Done,
    /// `add` found an existing item and stored nothing.
    Exists,
}

/// The replies to a batch: one per command, the values in one buffer.
#[derive(Debug)]
pub struct Batch {
    /// One reply per command, in command order.
    pub replies: Vec<Result<Reply, McError>>,
    /// The bytes the `Value` replies point into.
    pub values: Vec<u8>,
}

/// The memcached capability the algorithm runs on.
pub trait Memcached {
    /// One pipelined batch on the server that owns `route`.
    fn execute(&self, route: &str, commands: &[Command]) -> Result<Batch, McError>;
    /// The same batch on every server.
    fn broadcast(&self, commands: &[Command]) -> Result<(), McError>;
    /// A fresh random value.
    fn random_u64(&self) -> u64;
}

/// Writes retried at most this often when clears keep moving the versions.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// The tenant cache: a capability plus the versions last seen.
pub struct TenantCache<M> {
    memcached: M,
    versions: VersionCache,
}

impl<M: Memcached> TenantCache<M> {
    /// A cache over `memcached` with nothing remembered yet.
    pub fn new(memcached: M) -> Self {
        TenantCache {
            memcached,
            versions: VersionCache::default(),
        }
    }

    /// Reads several keys of one tenant in one round trip.
    pub fn get_many(&mut self, tenant: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let tenant = encode_part(tenant);
        let mut commands = Vec::with_capacity(2 + keys.len());
        commands.push(Command::Get(String::from(APP_RECORD)));
        commands.push(Command::Get(tenant_record(&tenant)));
        commands.extend(keys.iter().map(|key| Command::Get(data_record(&tenant, key))));
        let Batch {
            replies,
            values: stored,
        } = self.memcached.execute(&tenant, &commands).map_err(from_memcached)?;
        let mut replies = replies.into_iter();
        let current = versions(read_records(&mut replies, &stored)?);
        self.versions.put(&tenant, current);
        let mut values = Vec::with_capacity(keys.len());
        for reply in replies {
            let value = match (reply.map_err(from_memcached)?, current) {
                (Reply::Value(range), Some(current)) => {
                    stored.get(range).and_then(|entry| unframe_if_current(entry, current))
                }
                _ => None,
            };
            values.push(value);
        }
        if values.len() != keys.len() {
            return Err(Error::Internal(String::from("memcached host returned too few replies")));
        }
        Ok(values)
    }

    /// Stores several entries of one tenant: one round trip in steady state.
    pub fn set_many(&mut self, tenant: &str, entries: &[(String, Vec<u8>)], ttl: Option<u32>) -> Result<(), Error> {
        check_ttl(ttl)?;
        let tenant = encode_part(tenant);
        let keys: Vec<String> = entries.iter().map(|(key, _)| data_record(&tenant, key)).collect();
        // What the last attempt read of each record, if anything.
        let mut last: Option<[Record; 2]> = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            // With guessed versions, entries are only `add`ed: a guess must
            // never overwrite an entry another writer made visible.
            let seen = self.versions.get(&tenant);
            let guessed = seen.is_none();
            let (tag, mut commands) = match seen {
                Some(seen) => (seen, Vec::with_capacity(entries.len() + 2)),
                // Versions unknown: propose versions for the records not
                // known to hold one, with `add` (the read-back below names
                // the real ones if they exist) or, for a record holding
                // something that is not a version, with `set` (which hides
                // what was written under it).
                None => {
                    let [app, tenant_version] = last.unwrap_or([
                        self.versions.app().map_or(Record::Missing, Record::Version),
                        Record::Missing,
                    ]);
                    let mut commands = Vec::with_capacity(entries.len() + 4);
                    let mut propose = |record: Record, key: String| match record {
                        Record::Version(version) => version,
                        Record::Missing | Record::Corrupt => {
                            let fresh = self.memcached.random_u64();
                            let store = version_record(key, fresh);
                            commands.push(if record == Record::Missing {
                                Command::Add(store)
                            } else {
                                Command::Set(store)
                            });
                            fresh
                        }
                    };
                    let app = propose(app, String::from(APP_RECORD));
                    let tenant_version = propose(tenant_version, tenant_record(&tenant));
                    (
                        Versions {
                            app,
                            tenant: tenant_version,
                        },
                        commands,
                    )
                }
            };
            let proposals = commands.len();
            for (key, (_, value)) in keys.iter().zip(entries) {
                let store = Store {
                    key: key.clone(),
                    value: frame(tag, value),
                    ttl,
                };
                commands.push(if guessed {
                    Command::Add(store)
                } else {
                    Command::Set(store)
                });
            }
            commands.push(Command::Get(String::from(APP_RECORD)));
            commands.push(Command::Get(tenant_record(&tenant)));
            let Batch { replies, values } = self.memcached.execute(&tenant, &commands).map_err(from_memcached)?;
            if replies.len() != commands.len() {
                return Err(Error::Internal(String::from("memcached host returned too few replies")));
            }
            let mut replies = replies.into_iter();
            let mut all_stored = true;
            for (index, reply) in replies.by_ref().take(proposals + entries.len()).enumerate() {
                let stored = reply.map_err(from_memcached)?;
                all_stored &= index < proposals || matches!(stored, Reply::Done);
            }
            let records = read_records(&mut replies, &values)?;
            let current = versions(records);
            last = Some(records);
            self.versions.put(&tenant, current);
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
        let tenant = encode_part(tenant);
        let command = Command::Delete(data_record(&tenant, key));
        let batch = self.memcached.execute(&tenant, &[command]).map_err(from_memcached)?;
        match batch.replies.into_iter().next() {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(from_memcached(error)),
            None => Err(Error::Internal(String::from("memcached did not answer the delete"))),
        }
    }

    /// Moves the tenant version: one command.
    pub fn clear(&mut self, tenant: &str) -> Result<(), Error> {
        let tenant = encode_part(tenant);
        let fresh = self.memcached.random_u64();
        let command = Command::Set(version_record(tenant_record(&tenant), fresh));
        let batch = self.memcached.execute(&tenant, &[command]).map_err(from_memcached)?;
        match batch.replies.into_iter().next() {
            Some(Ok(Reply::Done)) => {
                let seen = self
                    .versions
                    .get(&tenant)
                    .map(|seen| Versions { tenant: fresh, ..seen });
                self.versions.put(&tenant, seen);
                Ok(())
            }
            Some(Err(error)) => Err(from_memcached(error)),
            _ => Err(Error::Internal(String::from("memcached did not confirm the clear"))),
        }
    }

    /// Moves the application version on every server: one command each.
    pub fn clear_all(&mut self) -> Result<(), Error> {
        let fresh = self.memcached.random_u64();
        let command = Command::Set(version_record(String::from(APP_RECORD), fresh));
        self.memcached.broadcast(&[command]).map_err(from_memcached)?;
        self.versions.move_app(fresh);
        Ok(())
    }
}

/// The caller's bytes of a stored frame written under `current`; `None`
/// for an entry written under other versions.
fn unframe_if_current(stored: &[u8], current: Versions) -> Option<Vec<u8>> {
    match unframe(stored) {
        Some((written, value)) if written == current => Some(value.to_vec()),
        _ => None,
    }
}

/// A version record, kept until evicted: reads bump it in the LRU.
fn version_record(key: String, version: u64) -> Store {
    Store {
        key,
        value: record_value(version),
        ttl: None,
    }
}

/// What a version record holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    Version(u64),
    Missing,
    /// Something that is not a version record (written by someone else).
    Corrupt,
}

/// Takes the application and tenant version replies off the front.
fn read_records(
    replies: &mut impl Iterator<Item = Result<Reply, McError>>,
    values: &[u8],
) -> Result<[Record; 2], Error> {
    let mut record = || -> Result<Record, Error> {
        match replies.next() {
            Some(Ok(Reply::Value(range))) => Ok(values
                .get(range)
                .and_then(parse_record)
                .map_or(Record::Corrupt, Record::Version)),
            Some(Ok(_)) => Ok(Record::Missing),
            Some(Err(error)) => Err(from_memcached(error)),
            None => Err(Error::Internal(String::from("memcached host returned too few replies"))),
        }
    };
    Ok([record()?, record()?])
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

/// The one place capability errors become tenant-cache errors.
fn from_memcached(error: McError) -> Error {
    match error {
        McError::Unavailable(message) => Error::Unavailable(message),
        McError::ValueTooLarge(limit) => Error::ValueTooLarge(limit),
        McError::InvalidKey(message) => Error::Internal(alloc::format!("host refused a key: {message}")),
        McError::Protocol(message) => Error::Internal(message),
    }
}
