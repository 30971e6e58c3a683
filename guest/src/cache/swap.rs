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
//!   counter's marker. A number in the counter's range stays a count
//!   (increments go on from it); one out of range is refused; anything
//!   else is stored framed, and increments then fail as they do on any
//!   value that is not a number.
//!
//! The basis travels as a token sealed for the entry (`crate::tokens`): a
//! token the component did not hand out for that tenant and key is
//! refused, and what a token names is only compared, never written.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use tenant_cache_layout::records::{ReadKeys, counter_record};

use super::counter::{Number, count_value, parse_number};
use super::{Cache, Capability, expect_reply, replace, versions, versions_first};
use crate::batch::Reply;
use crate::bindings::exports::tenant_cache::cache::tenant_cache::Error;
use crate::bindings::tenant_cache::cache::memcached::{Command, Item};
use crate::frame::{self, Counter, Stored, frame};
use crate::tokens::{self, hex_u64, hex_versions};
use crate::versions::Versions;

/// Where an entry stood when it was read for a swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapBasis(Basis);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    /// An entry holding a value (or anything but a live counter) or
    /// nothing, under `versions`: its CAS value (`None`: no entry).
    Entry { versions: Versions, cas: Option<u64> },
    /// A counter made under `versions`, and its count's CAS value.
    Counter {
        versions: Versions,
        counter: Counter,
        cas: u64,
    },
}

/// What a swap token starts with: its format.
const TOKEN_FORMAT: &str = "swap2:";

/// What the caller is told a refused token is.
const WHAT: &str = "get-for-swap";

impl Basis {
    /// The fields of its token.
    fn fields(self) -> String {
        match self {
            Basis::Entry { versions, cas } => {
                let cas = cas.map_or(String::from("-"), |cas| format!("{cas:016x}"));
                format!("e:{:016x}:{:016x}:{cas}", versions.app, versions.tenant)
            }
            Basis::Counter { versions, counter, cas } => format!(
                "c:{:016x}:{:016x}:{:016x}:{}:{cas:016x}",
                versions.app,
                versions.tenant,
                counter.era,
                if counter.signed { 's' } else { 'u' }
            ),
        }
    }

    /// The basis `fields` name; `None` for fields of no token.
    fn parse(fields: &str) -> Option<Basis> {
        let fields: Vec<&str> = fields.split(':').collect();
        Some(match fields.as_slice() {
            ["e", app, tenant, cas] => Basis::Entry {
                versions: hex_versions(app, tenant)?,
                cas: match *cas {
                    "-" => None,
                    digits => Some(hex_u64(digits)?),
                },
            },
            ["c", app, tenant, era, kind @ ("s" | "u"), cas] => Basis::Counter {
                versions: hex_versions(app, tenant)?,
                counter: Counter {
                    era: hex_u64(era)?,
                    signed: *kind == "s",
                },
                cas: hex_u64(cas)?,
            },
            _ => return None,
        })
    }
}

impl<C: Capability> Cache<C> {
    /// Reads `key` of `tenant` as `get` does, with where its entry stands:
    /// one round trip (two for a counter; a tenant without versions gets
    /// them first).
    pub fn get_for_swap(&mut self, tenant: &str, key: &str) -> Result<(Option<Vec<u8>>, SwapBasis), Error> {
        let keys = ReadKeys::new(tenant, key);
        let mut seen = self.observe(&keys)?;
        if seen.versions().is_none() {
            // A swap stores under the versions it read: a tenant without
            // them gets them (only where missing, or over what was read).
            self.establish(keys.tenant(), keys.tenant_record(), seen.records)?;
            seen = self.observe(&keys)?;
        }
        let versions = seen.versions().ok_or_else(|| {
            Error::Contention(String::from(
                "the tenant's namespace versions kept moving while reading for a swap; retry",
            ))
        })?;
        if let Some(counter) = seen.counter() {
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
            versions,
            cas: seen.cas(),
        };
        Ok((seen.value().map(<[u8]>::to_vec), SwapBasis(basis)))
    }

    /// The token of `basis`, read from `key` of `tenant`: what a caller
    /// carries outside the component, sealed for that entry.
    pub fn swap_token(&self, tenant: &str, key: &str, basis: &SwapBasis) -> Result<String, Error> {
        let keys = ReadKeys::new(tenant, key);
        tokens::seal(&self.capability, &keys, TOKEN_FORMAT, &basis.0.fields())
    }

    /// The basis `token` names, if the component handed it out for `key`
    /// of `tenant`; `invalid-input` otherwise.
    pub fn swap_basis(&self, tenant: &str, key: &str, token: &str) -> Result<SwapBasis, Error> {
        let keys = ReadKeys::new(tenant, key);
        let fields = tokens::open(&self.capability, &keys, token, TOKEN_FORMAT, WHAT)?;
        // Sealed by this component, so well formed; checked all the same.
        Basis::parse(fields)
            .map(SwapBasis)
            .ok_or_else(|| Error::InvalidInput(format!("{token:?} is not a token {WHAT} handed out")))
    }

    /// Stores `value` under `key` of `tenant` if its entry still stands
    /// where `basis` says: whether it did. One round trip. Nothing but the
    /// entry (or the counter's count) is written: the versions are only
    /// read.
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
            Basis::Entry { versions: under, cas } => {
                let framed = frame(under, value);
                let item = Item {
                    key: keys.data_record(),
                    value: &framed,
                    ttl: None,
                };
                let mut commands = Vec::from(versions_first(keys.tenant_record()));
                commands.push(replace(item, cas));
                let mut batch = self.exchange(keys.tenant(), &commands, size)?;
                let records = self.read_versions_first(keys.tenant(), &mut batch)?;
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
                    Number::In(number) => number.to_string().into_bytes(),
                    Number::OutOfRange => {
                        return Err(Error::InvalidInput(format!(
                            "{:?} is a number outside the counter's range ({}): a swap keeps a counter counting",
                            alloc::string::String::from_utf8_lossy(value),
                            super::counter::range_of(counter.signed)
                        )));
                    }
                    Number::Not => frame(under, value),
                };
                let item = Item {
                    key: &count,
                    value: &stored_value,
                    ttl: None,
                };
                let mut commands = Vec::from(versions_first(keys.tenant_record()));
                commands.extend([Command::Get(keys.data_record()), replace(item, Some(cas))]);
                let mut batch = self.exchange(keys.tenant(), &commands, size)?;
                let records = self.read_versions_first(keys.tenant(), &mut batch)?;
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
    fn token_fields_round_trip_and_others_are_refused() {
        let bases = [
            Basis::Entry {
                versions: Versions {
                    app: 1,
                    tenant: u64::MAX,
                },
                cas: Some(7),
            },
            Basis::Entry {
                versions: Versions { app: 0, tenant: 0 },
                cas: None,
            },
            Basis::Counter {
                versions: Versions { app: 1, tenant: 2 },
                counter: Counter { era: 3, signed: true },
                cas: 4,
            },
        ];
        for basis in bases {
            assert_eq!(Basis::parse(&basis.fields()), Some(basis));
        }
        for forged in [
            "",
            "e:m:m:-",
            "e:x:x:-",
            "e:0000000000000001:0000000000000002",
            "e:0000000000000001:0000000000000002:-:",
            "e:0000000000000001:0000000000000002:+000000000000007",
            "c:0000000000000001:0000000000000002:0000000000000003:q:0000000000000004",
        ] {
            assert_eq!(Basis::parse(forged), None, "{forged:?}");
        }
    }
}
