//! Compare-and-swap: a read that remembers where the entry stood
//! ([`SwapBasis`]), and a write that stores only if nothing moved it since,
//! in one round trip.
//!
//! - An entry that holds a value (or nothing) is replaced by memcached's
//!   compare-and-swap on the entry (`add` where there was none), in a
//!   batch that reads the versions first: the swap stands if the versions
//!   are still the ones read (no clear came between) and the entry is
//!   still the one read.
//! - A counter is swapped on its count record, whose CAS value every
//!   increment moves, so no increment between the read and the swap is
//!   lost; the batch also reads the entry, which must still be that
//!   counter's marker. A number stays a count (increments go on from it);
//!   anything else is stored framed, and increments then fail as they do
//!   on any value that is not a number.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use tenant_cache_layout::records::{ReadKeys, counter_record};

use super::counter::{count_value, parse_number};
use super::{Cache, Capability, Record, expect_reply, replace, versions, versions_first};
use crate::batch::Reply;
use crate::bindings::exports::tenant_cache::cache::tenant_cache::Error;
use crate::bindings::tenant_cache::cache::memcached::{Command, Item};
use crate::frame::{self, Counter, Stored, frame};
use crate::versions::Versions;

/// Where an entry stood when it was read for a swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapBasis(Basis);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    /// An entry holding a value or nothing: the version records read, and
    /// its CAS value (`None`: no entry).
    Entry { records: [Record; 2], cas: Option<u64> },
    /// A counter made under `versions`, and its count's CAS value.
    Counter {
        versions: Versions,
        counter: Counter,
        cas: u64,
    },
}

/// What a swap token starts with: its format.
const TOKEN_FORMAT: &str = "swap1:";

impl SwapBasis {
    /// The basis as text, for callers that carry it outside the component.
    pub fn token(&self) -> String {
        let mut token = String::from(TOKEN_FORMAT);
        // Writing into a String cannot fail.
        let _ = match self.0 {
            Basis::Entry { records, cas } => {
                let record = |record: Record| match record {
                    Record::Version(version) => format!("{version:016x}"),
                    Record::Missing => String::from("m"),
                    Record::Corrupt => String::from("x"),
                };
                let cas = cas.map_or(String::from("-"), |cas| format!("{cas:016x}"));
                write!(token, "e:{}:{}:{cas}", record(records[0]), record(records[1]))
            }
            Basis::Counter { versions, counter, cas } => write!(
                token,
                "c:{:016x}:{:016x}:{:016x}:{}:{cas:016x}",
                versions.app,
                versions.tenant,
                counter.era,
                if counter.signed { 's' } else { 'u' }
            ),
        };
        token
    }

    /// The basis a token names; an error for text that is no token.
    pub fn from_token(token: &str) -> Result<SwapBasis, Error> {
        let invalid = || Error::InvalidInput(format!("{token:?} is not a token get-for-swap handed out"));
        let fields: Vec<&str> = token
            .strip_prefix(TOKEN_FORMAT)
            .ok_or_else(invalid)?
            .split(':')
            .collect();
        let hex = |digits: &str| -> Result<u64, Error> {
            let lowercase = digits.len() == 16 && digits.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
            match lowercase {
                true => u64::from_str_radix(digits, 16).map_err(|_| invalid()),
                false => Err(invalid()),
            }
        };
        let record = |field: &str| -> Result<Record, Error> {
            match field {
                "m" => Ok(Record::Missing),
                "x" => Ok(Record::Corrupt),
                digits => hex(digits).map(Record::Version),
            }
        };
        let basis = match fields.as_slice() {
            ["e", app, tenant, cas] => Basis::Entry {
                records: [record(app)?, record(tenant)?],
                cas: match *cas {
                    "-" => None,
                    digits => Some(hex(digits)?),
                },
            },
            ["c", app, tenant, era, kind @ ("s" | "u"), cas] => Basis::Counter {
                versions: Versions {
                    app: hex(app)?,
                    tenant: hex(tenant)?,
                },
                counter: Counter {
                    era: hex(era)?,
                    signed: *kind == "s",
                },
                cas: hex(cas)?,
            },
            _ => return Err(invalid()),
        };
        Ok(SwapBasis(basis))
    }
}

impl<C: Capability> Cache<C> {
    /// Reads `key` of `tenant` as `get` does, with where its entry stands:
    /// one round trip (two for a counter).
    pub fn get_for_swap(&mut self, tenant: &str, key: &str) -> Result<(Option<Vec<u8>>, SwapBasis), Error> {
        let keys = ReadKeys::new(tenant, key);
        let seen = self.observe(&keys)?;
        if let (Some(versions), Some(counter)) = (seen.versions(), seen.counter()) {
            let count = counter_record(keys.tenant(), (versions.app, versions.tenant), counter.era, key);
            let mut batch = self.exchange(keys.tenant(), &[Command::GetWithCas(&count)], 0)?;
            if let Reply::ValueWithCas(range, cas) = expect_reply(&mut batch, 0)? {
                let value = batch
                    .values()
                    .get(range)
                    .and_then(|stored| count_value(stored, counter, versions));
                return Ok((value, SwapBasis(Basis::Counter { versions, counter, cas })));
            }
            // The count is gone (evicted): the key reads as missing, and a
            // swap replaces the marker.
        }
        let basis = Basis::Entry {
            records: seen.records,
            cas: seen.cas(),
        };
        Ok((seen.value().map(<[u8]>::to_vec), SwapBasis(basis)))
    }

    /// Stores `value` under `key` of `tenant` if its entry still stands
    /// where `basis` says: whether it did. One round trip.
    pub fn compare_and_swap(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        basis: &SwapBasis,
    ) -> Result<bool, Error> {
        let keys = ReadKeys::new(tenant, key);
        let size = value.len() as u64;
        match basis.0 {
            Basis::Entry { records, cas } => {
                // Versions the read found none of are proposed, as a write does.
                let (under, proposals) = self.propose(records, keys.tenant_record());
                let framed = frame(under, value);
                let item = Item {
                    key: keys.data_record(),
                    value: &framed,
                    ttl: None,
                };
                let mut commands = versions_first(&proposals, keys.tenant_record());
                commands.push(replace(item, cas));
                let mut batch = self.exchange(keys.tenant(), &commands, size)?;
                let records = self.read_versions_first(keys.tenant(), proposals.len(), &mut batch)?;
                let stored = expect_reply(&mut batch, size)? == Reply::Done;
                Ok(stored && versions(records) == Some(under))
            }
            Basis::Counter {
                versions: under,
                counter,
                cas,
            } => {
                let count = counter_record(keys.tenant(), (under.app, under.tenant), counter.era, key);
                let stored_value = match parse_number(value, counter.signed) {
                    Some(number) => number.to_string().into_bytes(),
                    None => frame(under, value),
                };
                let item = Item {
                    key: &count,
                    value: &stored_value,
                    ttl: None,
                };
                let mut commands = versions_first(&[], keys.tenant_record());
                commands.extend([Command::Get(keys.data_record()), replace(item, Some(cas))]);
                let mut batch = self.exchange(keys.tenant(), &commands, size)?;
                let records = self.read_versions_first(keys.tenant(), 0, &mut batch)?;
                let marker = match expect_reply(&mut batch, 0)? {
                    Reply::Value(range) => batch.values().get(range).and_then(frame::read),
                    _ => None,
                };
                let live = versions(records) == Some(under) && marker == Some(Stored::Counter(under, counter));
                let stored = expect_reply(&mut batch, size)? == Reply::Done;
                Ok(live && stored)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_are_refused() {
        let bases = [
            Basis::Entry {
                records: [Record::Version(1), Record::Version(u64::MAX)],
                cas: Some(7),
            },
            Basis::Entry {
                records: [Record::Missing, Record::Corrupt],
                cas: None,
            },
            Basis::Counter {
                versions: Versions { app: 1, tenant: 2 },
                counter: Counter { era: 3, signed: true },
                cas: 4,
            },
        ];
        for basis in bases {
            let token = SwapBasis(basis).token();
            assert_eq!(SwapBasis::from_token(&token).ok(), Some(SwapBasis(basis)), "{token}");
        }
        for forged in [
            "",
            "swap1:",
            "swap2:e:m:m:-",
            "swap1:e:m:m",
            "swap1:e:m:m:-:",
            "swap1:e:M:m:-",
            "swap1:e:0000000000000001:m:+000000000000007",
            "swap1:c:0000000000000001:0000000000000002:0000000000000003:q:0000000000000004",
            "lease1:0123456789abcdef0000000000000007",
        ] {
            assert!(
                matches!(SwapBasis::from_token(forged), Err(Error::InvalidInput(_))),
                "{forged:?}"
            );
        }
    }
}
