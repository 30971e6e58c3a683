//! Counters: `increment` in one round trip, with memcached's arithmetic,
//! under the same clears as every other entry.
//!
//! memcached can only add to an item that holds a decimal number, and an
//! entry holds a frame (its versions in front of the value). So a counter
//! is two records:
//! - its entry `d:<tenant>:<key>` holds a *marker*
//!   ([`crate::frame::marker`]): the versions it was made under, and its
//!   *era*, a random value drawn when it was made;
//! - its count lives in `c:<tenant>:<digest>`
//!   (`tenant_cache_layout::records::counter_record`), whose key covers
//!   the versions, the era and the key.
//!
//! The entry stays the one authority on what a key holds: a `set` or a
//! `delete` replaces or removes the marker as any entry, and the count of
//! a counter whose marker is gone (or from before a clear) is never read
//! or added to again, because every counter made later has an era, and so
//! a count record, of its own.
//!
//! - **increment**, once the instance knows the versions and the counter:
//!   one batch reads the versions and the entry, then adds to the count
//!   (`ma`). It counts if the versions are the known ones, the entry is the
//!   known counter's marker, and the count was there. Versions never come
//!   back once moved, and an era's marker is written once: so when those
//!   reads say "live", the counter was live from the start of the batch,
//!   and the addition happened while it was, or (if a clear or a `set`
//!   came between the reads and the addition) it is ordered just before
//!   that clear or `set`, which hides it. Otherwise the addition went to a
//!   count nothing reads, and the increment goes on from what the batch
//!   read.
//! - **making a counter**: a fresh era's count record is set to the
//!   starting count (the entry's number, if it holds one, plus the delta),
//!   then the marker replaces the entry read, by its CAS value (or is added
//!   where there was none), in one batch that reads the versions before.
//!   Two increments making the same counter race on that compare-and-swap;
//!   the loser goes on with the winner's counter.
//! - **get** of a counter reads its count in a second round trip.
//!
//! Counts are u64 on the wire (memcached wraps at 2^64); a signed counter
//! keeps its count as the two's complement, so adding a negative delta is
//! adding its two's complement.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use tenant_cache_layout::records::{APP_RECORD, ReadKeys, counter_record};

use super::{
    Cache, Capability, MAX_WRITE_ATTEMPTS, Record, expect_reply, read_records, replace, store, versions, versions_first,
};
use crate::batch::{Batch, Reply};
use crate::bindings::exports::tenant_cache::cache::tenant_cache::Error;
use crate::bindings::tenant_cache::cache::memcached::{Command, CounterDelta, Item};
use crate::frame::{self, Counter, Stored, marker};
use crate::versions::Versions;

/// The counters an instance made or read, by entry record, so that its
/// next increment goes straight to the count. Entries may be stale: an
/// increment checks the marker in its own batch.
#[derive(Default)]
pub struct KnownCounters {
    seen: BTreeMap<String, Counter>,
}

/// Counters remembered at most; past that the cache starts over.
const CAPACITY: usize = 4096;

impl KnownCounters {
    fn get(&self, record: &str) -> Option<Counter> {
        self.seen.get(record).copied()
    }

    /// Remembers `counter`; whether it is news.
    fn put(&mut self, record: &str, counter: Counter) -> bool {
        if self.seen.get(record) == Some(&counter) {
            return false;
        }
        if self.seen.len() >= CAPACITY {
            self.seen.clear();
        }
        self.seen.insert(String::from(record), counter);
        true
    }
}

/// What a read of a key found: the version records, and the entry with
/// its CAS value.
pub(super) struct Observed {
    pub(super) records: [Record; 2],
    pub(super) entry: Option<(Vec<u8>, u64)>,
    /// The entry is the marker of a live counter whose count is gone
    /// (evicted): the counter is made again.
    evicted: bool,
}

impl Observed {
    pub(super) fn versions(&self) -> Option<Versions> {
        versions(self.records)
    }

    /// The counter the entry is, if it is one made under the current
    /// versions.
    pub(super) fn counter(&self) -> Option<Counter> {
        let current = self.versions()?;
        match frame::read(&self.entry.as_ref()?.0)? {
            Stored::Counter(made, counter) if made == current => Some(counter),
            _ => None,
        }
    }

    /// The entry's value, if it is one written under the current versions.
    pub(super) fn value(&self) -> Option<&[u8]> {
        let current = self.versions()?;
        match frame::read(&self.entry.as_ref()?.0)? {
            Stored::Value(written, value) if written == current => Some(value),
            _ => None,
        }
    }

    /// The entry's CAS value, if there is an entry.
    pub(super) fn cas(&self) -> Option<u64> {
        self.entry.as_ref().map(|(_, cas)| *cas)
    }
}

/// What one attempt of an increment came to.
enum Step {
    /// The new count.
    Counted(u64),
    /// Not counted; what the attempt read.
    Again(Observed),
}

/// The error for an increment of `key`, which holds something other than a
/// number the counter can count from.
fn not_a_counter(key: &str, number: Number, signed: bool) -> Error {
    let why = match number {
        Number::OutOfRange => format!("a decimal number outside the counter's range ({})", range_of(signed)),
        _ => String::from("not a decimal number"),
    };
    Error::NotACounter(format!("the entry under {key:?} is not a counter: its value is {why}"))
}

/// The numbers a counter counts: signed ones (made by an s64 increment)
/// or unsigned ones.
pub(super) fn range_of(signed: bool) -> &'static str {
    match signed {
        true => "-9223372036854775808 to 9223372036854775807",
        false => "0 to 18446744073709551615",
    }
}

/// What a caller's bytes are to a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Number {
    /// A decimal number in its range, as the count holds it (a signed one
    /// as its two's complement).
    In(u64),
    /// A decimal number (`-`, then digits) outside its range.
    OutOfRange,
    /// No decimal number.
    Not,
}

/// A count as the caller's bytes are read: decimal (`-` allowed), in the
/// range of a counter that is `signed` or not.
pub(super) fn parse_number(bytes: &[u8], signed: bool) -> Number {
    let Ok(text) = core::str::from_utf8(bytes) else {
        return Number::Not;
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Number::Not;
    }
    let parsed = match signed {
        true => text.parse::<i64>().ok().map(|number| number as u64),
        false => text.parse::<u64>().ok(),
    };
    parsed.map_or(Number::OutOfRange, Number::In)
}

/// A count as the caller reads it: decimal, signed if the counter is.
pub(super) fn render(count: u64, signed: bool) -> Vec<u8> {
    match signed {
        true => (count as i64).to_string().into_bytes(),
        false => count.to_string().into_bytes(),
    }
}

/// A count record's value: memcached's decimal number (padded with spaces
/// where an addition shrank it in place).
fn stored_count(bytes: &[u8]) -> Option<u64> {
    match parse_number(bytes.trim_ascii_end(), false) {
        Number::In(count) => Some(count),
        _ => None,
    }
}

/// What a count record of a counter under `versions` holds, as the caller
/// reads it: the count, or a value a compare-and-swap put there.
pub(super) fn count_value(stored: &[u8], counter: Counter, versions: Versions) -> Option<Vec<u8>> {
    if let Some(count) = stored_count(stored) {
        return Some(render(count, counter.signed));
    }
    match frame::read(stored)? {
        Stored::Value(written, value) if written == versions => Some(value.to_vec()),
        _ => None,
    }
}

impl<C: Capability> Cache<C> {
    /// Adds `delta` to the counter under `key` of `tenant`, making it if
    /// there is none: the new count. One round trip once this instance
    /// knows the tenant's versions and the counter, two otherwise (a few
    /// more only when writers race on the key).
    pub fn increment(&mut self, tenant: &str, key: &str, delta: u64, signed: bool) -> Result<u64, Error> {
        let keys = ReadKeys::new(tenant, key);
        let mut observed: Option<Observed> = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let step = match &observed {
                None => match (self.recall(keys.tenant()), self.recall_counter(keys.data_record())) {
                    (Some(known), Some(counter)) => self.count(&keys, key, known, counter, delta)?,
                    // A counter this instance never saw: made at once (its
                    // marker added where there is no entry).
                    (Some(known), None) => self.make_counter(&keys, key, Err(known), delta, signed)?,
                    (None, _) => Step::Again(self.observe(&keys)?),
                },
                Some(seen) => match (seen.versions(), seen.counter()) {
                    (Some(current), Some(counter)) if !seen.evicted => {
                        self.count(&keys, key, current, counter, delta)?
                    }
                    _ => self.make_counter(&keys, key, Ok(seen), delta, signed)?,
                },
            };
            match step {
                Step::Counted(count) => return Ok(count),
                Step::Again(seen) => observed = Some(seen),
            }
        }
        Err(Error::Contention(String::from(
            "the counter kept changing (concurrent clears, writes or evictions) while incrementing; retry",
        )))
    }

    /// Reads the versions and the entry of `keys` with its CAS value: one
    /// round trip.
    pub(super) fn observe(&mut self, keys: &ReadKeys) -> Result<Observed, Error> {
        let commands = [
            Command::Get(APP_RECORD),
            Command::Get(keys.tenant_record()),
            Command::GetWithCas(keys.data_record()),
        ];
        let mut batch = self.exchange(keys.tenant(), &commands, 0)?;
        self.observed(keys, &mut batch)
    }

    /// Takes the version records and the entry (read with its CAS value)
    /// off the front of `batch`, and remembers what they tell.
    fn observed(&mut self, keys: &ReadKeys, batch: &mut Batch) -> Result<Observed, Error> {
        let records = read_records(batch)?;
        self.learn(keys.tenant(), records);
        self.seen(keys, records, batch)
    }

    /// What the version `records` and the entry of `keys` (read with its
    /// CAS value: the next reply of `batch`) tell; a counter is remembered.
    fn seen(&mut self, keys: &ReadKeys, records: [Record; 2], batch: &mut Batch) -> Result<Observed, Error> {
        let entry = match expect_reply(batch, 0)? {
            Reply::ValueWithCas(range, cas) => batch.values().get(range).map(|bytes| (bytes.to_vec(), cas)),
            _ => None,
        };
        let seen = Observed {
            records,
            entry,
            evicted: false,
        };
        if let Some(counter) = seen.counter() {
            self.remember_counter(keys.data_record(), counter);
        }
        Ok(seen)
    }

    /// Adds `delta` to the count of `counter`, if it is still the live
    /// counter under `versions`: one round trip.
    fn count(
        &mut self,
        keys: &ReadKeys,
        key: &str,
        versions: Versions,
        counter: Counter,
        delta: u64,
    ) -> Result<Step, Error> {
        let count = counter_record(keys.tenant(), (versions.app, versions.tenant), counter.era, key);
        let commands = [
            Command::Get(APP_RECORD),
            Command::Get(keys.tenant_record()),
            Command::GetWithCas(keys.data_record()),
            Command::Increment(CounterDelta { key: &count, delta }),
        ];
        let mut batch = self.exchange(keys.tenant(), &commands, 0)?;
        let seen = self.observed(keys, &mut batch)?;
        let live = seen.versions() == Some(versions) && seen.counter() == Some(counter);
        match (expect_reply(&mut batch, 0)?, live) {
            (Reply::Value(range), true) => batch
                .values()
                .get(range)
                .and_then(stored_count)
                .map(Step::Counted)
                .ok_or_else(|| Error::Internal(String::from("memcached answered an increment with no number"))),
            // A compare-and-swap stored a value that is not a number.
            (Reply::NotANumber, true) => Err(not_a_counter(key, Number::Not, counter.signed)),
            (Reply::Miss, true) => Ok(Step::Again(Observed { evicted: true, ..seen })),
            _ => Ok(Step::Again(seen)),
        }
    }

    /// Makes a counter under `key`, counting `delta` from the entry's
    /// number (or from 0): from what an attempt `Ok(observed)`, or, with
    /// `Err(versions)` known and nothing read, where there is no entry.
    fn make_counter(
        &mut self,
        keys: &ReadKeys,
        key: &str,
        basis: Result<&Observed, Versions>,
        delta: u64,
        signed: bool,
    ) -> Result<Step, Error> {
        let (under, base, cas) = match basis {
            Ok(seen) => {
                let base = match (seen.versions(), seen.value()) {
                    (Some(_), Some(value)) => match parse_number(value, signed) {
                        Number::In(number) => number,
                        other => return Err(not_a_counter(key, other, signed)),
                    },
                    _ => 0,
                };
                // A tenant without versions gets them first; what the entry
                // holds then was written under none, so it counts from 0,
                // and its CAS value still guards it.
                let under = match seen.versions() {
                    Some(versions) => versions,
                    None => self.establish(keys.tenant(), keys.tenant_record(), seen.records)?,
                };
                (under, base, seen.cas())
            }
            Err(known) => (known, 0, None),
        };
        let counter = Counter {
            era: self.capability.random_u64(),
            signed,
        };
        let count = counter_record(keys.tenant(), (under.app, under.tenant), counter.era, key);
        let start = base.wrapping_add(delta);
        let start_bytes = start.to_string().into_bytes();
        let marker = marker(under, counter);
        let entry = Item {
            key: keys.data_record(),
            value: &marker,
            ttl: None,
        };
        let mut commands = Vec::from(versions_first(keys.tenant_record()));
        commands.extend([
            store(&count, &start_bytes, None, false),
            replace(entry, cas),
            Command::GetWithCas(keys.data_record()),
        ]);
        let mut batch = self.exchange(keys.tenant(), &commands, 0)?;
        let records = self.read_versions_first(keys.tenant(), &mut batch)?;
        expect_reply(&mut batch, 0)?;
        let made = expect_reply(&mut batch, 0)? == Reply::Done && versions(records) == Some(under);
        if made {
            self.remember_counter(keys.data_record(), counter);
            return Ok(Step::Counted(start));
        }
        self.seen(keys, records, &mut batch).map(Step::Again)
    }

    /// The values of `counters` (entry record, key, counter) of the tenant
    /// whose part is `tenant`, all made under `versions`: one round trip.
    pub(super) fn read_counts(
        &mut self,
        tenant: &str,
        versions: Versions,
        counters: &[(&str, &str, Counter)],
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let keys: Vec<String> = counters
            .iter()
            .map(|(_, key, counter)| counter_record(tenant, (versions.app, versions.tenant), counter.era, key))
            .collect();
        let commands: Vec<Command<'_>> = keys.iter().map(|key| Command::Get(key)).collect();
        let mut batch = self.exchange(tenant, &commands, 0)?;
        let mut values = Vec::with_capacity(counters.len());
        for (record, _, counter) in counters {
            self.remember_counter(record, *counter);
            values.push(match expect_reply(&mut batch, 0)? {
                Reply::Value(range) => batch
                    .values()
                    .get(range)
                    .and_then(|stored| count_value(stored, *counter, versions)),
                _ => None,
            });
        }
        Ok(values)
    }

    /// Remembers that the entry `record` is `counter`, here and in the
    /// host's memo for other instances.
    fn remember_counter(&mut self, record: &str, counter: Counter) {
        if self.counters.put(record, counter) {
            let mut bytes = [0u8; 9];
            bytes[..8].copy_from_slice(&counter.era.to_le_bytes());
            bytes[8] = u8::from(counter.signed);
            self.capability.memo_put(record, Some(&bytes));
        }
    }

    /// The counter this instance knows the entry `record` to be, or else
    /// the one the host's memo recalls.
    fn recall_counter(&mut self, record: &str) -> Option<Counter> {
        if let Some(counter) = self.counters.get(record) {
            return Some(counter);
        }
        let bytes = self.capability.memo_get(record)?;
        let counter = match bytes.as_slice() {
            [era @ .., signed @ (0 | 1)] if era.len() == 8 => Counter {
                era: u64::from_le_bytes(era.try_into().ok()?),
                signed: *signed == 1,
            },
            _ => return None,
        };
        self.counters.put(record, counter);
        Some(counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_their_counter_counts_them() {
        assert_eq!(parse_number(b"42", false), Number::In(42));
        assert_eq!(parse_number(b"007", false), Number::In(7));
        assert_eq!(parse_number(b"18446744073709551615", false), Number::In(u64::MAX));
        assert_eq!(parse_number(b"-1", true), Number::In(u64::MAX));
        assert_eq!(parse_number(b"-9223372036854775808", true), Number::In(1 << 63));
        for not in [&b""[..], b"-", b"+1", b" 1", b"1 ", b"1x", b"\xff"] {
            assert_eq!(parse_number(not, false), Number::Not, "{not:?}");
        }
        for out in [&b"-1"[..], b"18446744073709551616"] {
            assert_eq!(parse_number(out, false), Number::OutOfRange, "{out:?}");
        }
        assert_eq!(parse_number(b"9223372036854775808", true), Number::OutOfRange);
        assert_eq!(render(u64::MAX, true), b"-1");
        assert_eq!(render(u64::MAX, false), b"18446744073709551615");
        assert_eq!(stored_count(b"7      "), Some(7));
    }

    #[test]
    fn a_count_record_reads_as_its_count_or_as_a_value_swapped_in() {
        let versions = Versions { app: 1, tenant: 2 };
        let signed = Counter { era: 3, signed: true };
        assert_eq!(
            count_value(b"18446744073709551615", signed, versions),
            Some(b"-1".to_vec())
        );
        let swapped = frame::frame(versions, b"text");
        assert_eq!(count_value(&swapped, signed, versions), Some(b"text".to_vec()));
        assert_eq!(count_value(&swapped, signed, Versions { app: 1, tenant: 9 }), None);
        assert_eq!(count_value(b"junk", signed, versions), None);
    }
}
