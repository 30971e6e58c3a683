//! Leases: on a miss, one caller per key and lease period computes the
//! value, across every instance, process and host; the others are told to
//! wait (`busy`), or take the entry from before the last clear if they
//! accept it (`stale`).
//!
//! The lease lives in the entry itself, so taking it, filling it and any
//! other write of the key are ordered by memcached's compare-and-swap on
//! one item:
//! - **get-or-lease** reads the versions and the entry with its CAS value,
//!   like `get`: a current entry is a hit, one round trip. On a miss a
//!   second batch replaces exactly the entry read (`set-if-cas`, or `add`
//!   where there was none) with a *placeholder*
//!   ([`crate::frame::placeholder`]): the versions, a random holder, and
//!   the value it replaced (for callers that accept a stale one), with
//!   the lease's TTL. Stored, this caller holds the lease; the batch reads
//!   the placeholder back for its CAS value. A placeholder of the current
//!   versions is a lease someone holds (`busy`); one from before a clear,
//!   or given back, is a miss like any stale entry, so a lease taken
//!   before a clear never holds a reader back after it.
//! - **early refresh**: with a refresh window the entry is read with
//!   `get-early`; the one reader memcached tells to refresh it holds the
//!   lease for it (no second batch), every other reader hits.
//! - **fill** stores the value framed with the lease's versions over the
//!   placeholder (or, for an early refresh, the entry read) by its CAS
//!   value: it stores nothing if anything wrote the key since (a `set`,
//!   a `delete`, a swap, another caller's lease after this one ran out),
//!   and the versions read back in the same batch tell whether a clear
//!   came between.
//! - **release** gives the placeholder back (holder [`RELEASED`]) by its
//!   CAS value: the next reader takes the lease at once.
//!
//! The token names the versions, the holder and the CAS value, sealed for
//! the entry (`crate::tokens`): a token not handed out for that tenant and
//! key is refused, and a fill can only ever replace its own placeholder.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use tenant_cache_layout::records::{APP_RECORD, ReadKeys};

use super::{
    Cache, Capability, MAX_TTL, expect_reply, read_records, replace, value_if_current, versions, versions_first,
};
use crate::batch::Reply;
use crate::bindings::exports::tenant_cache::cache::tenant_cache::{Error, LeaseOptions, Lookup};
use crate::bindings::tenant_cache::cache::memcached::{CasItem, Command, EarlyGet, Item};
use crate::frame::{self, RELEASED, Stored, frame, placeholder, unframe};
use crate::tokens::{self, hex_u64, hex_versions};
use crate::versions::Versions;

/// The shortest lease: memcached's clock ticks in whole seconds, so a TTL
/// of N ends between N-1 and N seconds later, and 1 could end at once.
const MIN_LEASE_TTL: u32 = 2;

/// The longest lease: an hour.
const MAX_LEASE_TTL: u32 = 3600;

/// Seconds a lease given back stays, carrying the stale value for callers
/// that accept it, unless a reader takes the lease first: a stale value
/// outlives its lease by no more.
const RELEASED_TTL: u32 = 2;

/// What a lease token starts with: its format.
const TOKEN_FORMAT: &str = "lease2:";

/// What the caller is told a refused token is.
const WHAT: &str = "get-or-lease";

/// Attempts at taking a lease while the entry keeps changing.
const MAX_ATTEMPTS: usize = 4;

/// A lease, as its token names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// A miss: the placeholder `holder` put under `versions`, whose CAS
    /// value is `cas`.
    Miss { versions: Versions, holder: u64, cas: u64 },
    /// An entry near its expiry, written under `versions`, read with CAS
    /// value `cas`: memcached chose this caller to refresh it.
    Refresh { versions: Versions, cas: u64 },
}

impl Lease {
    fn fields(self) -> String {
        match self {
            Lease::Miss { versions, holder, cas } => format!(
                "m:{:016x}:{:016x}:{holder:016x}:{cas:016x}",
                versions.app, versions.tenant
            ),
            Lease::Refresh { versions, cas } => {
                format!("r:{:016x}:{:016x}:{cas:016x}", versions.app, versions.tenant)
            }
        }
    }

    fn parse(fields: &str) -> Option<Lease> {
        let fields: Vec<&str> = fields.split(':').collect();
        Some(match fields.as_slice() {
            ["m", app, tenant, holder, cas] => Lease::Miss {
                versions: hex_versions(app, tenant)?,
                holder: hex_u64(holder)?,
                cas: hex_u64(cas)?,
            },
            ["r", app, tenant, cas] => Lease::Refresh {
                versions: hex_versions(app, tenant)?,
                cas: hex_u64(cas)?,
            },
            _ => return None,
        })
    }

    /// The versions the value is computed under, and the CAS value of the
    /// item a fill replaces.
    fn basis(self) -> (Versions, u64) {
        match self {
            Lease::Miss { versions, cas, .. } | Lease::Refresh { versions, cas } => (versions, cas),
        }
    }
}

fn check_options(options: &LeaseOptions) -> Result<(), Error> {
    if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&options.lease_ttl) {
        return Err(Error::InvalidInput(format!(
            "a lease lasts {MIN_LEASE_TTL} to {MAX_LEASE_TTL} seconds, not {} (memcached counts whole seconds: a \
             lease of 1 could end at once)",
            options.lease_ttl
        )));
    }
    if options.refresh_window > MAX_TTL {
        return Err(Error::InvalidInput(format!(
            "a refresh window is at most {MAX_TTL} seconds (ten years, the longest TTL), not {}",
            options.refresh_window
        )));
    }
    Ok(())
}

/// The value a stored entry offers a caller that accepts a stale one: a
/// value's, or the one a placeholder carries.
fn stale_value(stored: &[u8]) -> Option<Vec<u8>> {
    match frame::read(stored)? {
        Stored::Value(_, value) => Some(value.to_vec()),
        Stored::Lease { stale, .. } => unframe(stale).map(|(_, value)| value.to_vec()),
        Stored::Counter(..) => None,
    }
}

/// `busy`, or `stale` with what `stored` offers if the caller accepts it.
fn wait(options: &LeaseOptions, stored: Option<&[u8]>) -> Lookup {
    match stored.filter(|_| options.accept_stale).and_then(stale_value) {
        Some(stale) => Lookup::Stale(stale),
        None => Lookup::Busy,
    }
}

/// What a read of the entry found: its stored bytes and CAS value, and
/// whether memcached chose this reader to refresh it.
struct Read {
    entry: Option<(Vec<u8>, u64)>,
    refresh: bool,
}

impl<C: Capability> Cache<C> {
    /// Reads one key; on a miss, takes its lease or says who has it. A hit
    /// is one round trip, a miss two (more while writers race on the key,
    /// or for a tenant without versions).
    pub fn get_or_lease(&mut self, tenant: &str, key: &str, options: &LeaseOptions) -> Result<Lookup, Error> {
        check_options(options)?;
        let keys = ReadKeys::new(tenant, key);
        // Whether a placeholder may carry the value it replaces: not once
        // that made it too large to store.
        let mut carry = true;
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let (current, read) = self.read_for_lease(&keys, options.refresh_window)?;
            let Some(current) = current else {
                // No versions (a tenant never written, or its records were
                // lost): made first, then read again.
                self.establish(keys.tenant(), keys.tenant_record(), self.guessed())?;
                continue;
            };
            let stored = read.entry.as_ref().map(|(stored, _)| stored.as_slice());
            match stored.and_then(frame::read) {
                Some(Stored::Value(written, _)) if written == current => {
                    let (stored, cas) = read.entry.unwrap_or_default();
                    let len = stored.len();
                    return Ok(match read.refresh {
                        true => Lookup::Lease(self.lease_token(&keys, Lease::Refresh { versions: current, cas })?),
                        false => value_if_current(stored, 0..len, current).map_or(Lookup::Busy, Lookup::Hit),
                    });
                }
                Some(Stored::Counter(made, counter)) if made == current => {
                    let counters = [(keys.data_record(), key, counter)];
                    if let Some(count) = self.read_counts(keys.tenant(), current, &counters)?.pop().flatten() {
                        return Ok(Lookup::Hit(count));
                    }
                    // The count is gone: a miss, leased over the marker.
                }
                Some(Stored::Lease { versions, holder, .. }) if versions == current && holder != RELEASED => {
                    return Ok(wait(options, stored));
                }
                _ => {}
            }
            // A miss: the lease is taken by replacing exactly what was read.
            let holder = loop {
                let holder = self.capability.random_u64();
                if holder != RELEASED {
                    break holder;
                }
            };
            let carried = stored.filter(|_| carry).unwrap_or_default();
            let placeholder = placeholder(current, holder, carried);
            let item = Item {
                key: keys.data_record(),
                value: &placeholder,
                ttl: Some(options.lease_ttl),
            };
            let mut commands = vec![replace(item, read.entry.as_ref().map(|(_, cas)| *cas))];
            commands.push(Command::GetWithCas(keys.data_record()));
            commands.extend(versions_first(keys.tenant_record()));
            let mut batch = self.exchange(keys.tenant(), &commands, placeholder.len() as u64)?;
            let taken = match expect_reply(&mut batch, placeholder.len() as u64) {
                Ok(reply) => reply == Reply::Done,
                // The value carried made it too large (and the host removed
                // the key): again, without it.
                Err(Error::ValueTooLarge(_)) if carry => {
                    carry = false;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let now = match expect_reply(&mut batch, 0)? {
                Reply::ValueWithCas(range, cas) => batch.values().get(range).map(|stored| (stored.to_vec(), cas)),
                _ => None,
            };
            let records = self.read_versions_first(keys.tenant(), &mut batch)?;
            match now {
                // Ours, under versions that are still current.
                Some((stored, cas)) if taken && stored == placeholder && versions(records) == Some(current) => {
                    return Ok(Lookup::Lease(self.lease_token(
                        &keys,
                        Lease::Miss {
                            versions: current,
                            holder,
                            cas,
                        },
                    )?));
                }
                // Another caller's lease, taken first.
                Some((stored, _))
                    if !taken
                        && versions(records) == Some(current)
                        && matches!(frame::read(&stored), Some(Stored::Lease { versions, holder, .. })
                            if versions == current && holder != RELEASED) =>
                {
                    return Ok(wait(options, Some(&stored)));
                }
                // Written meanwhile (maybe the value itself), or the
                // versions moved: read again.
                _ => last = read.entry,
            }
        }
        // The key kept changing: what was last read, as a caller waiting.
        Ok(wait(options, last.as_ref().map(|(stored, _)| stored.as_slice())))
    }

    /// Reads the versions and the entry of `keys` with its CAS value (early
    /// with a refresh `window`): the current versions, now remembered.
    fn read_for_lease(&mut self, keys: &ReadKeys, window: u32) -> Result<(Option<Versions>, Read), Error> {
        let entry = match window {
            0 => Command::GetWithCas(keys.data_record()),
            window => Command::GetEarly(EarlyGet {
                key: keys.data_record(),
                window,
            }),
        };
        let commands = [Command::Get(APP_RECORD), Command::Get(keys.tenant_record()), entry];
        let mut batch = self.exchange(keys.tenant(), &commands, 0)?;
        let records = read_records(&mut batch)?;
        let current = self.learn(keys.tenant(), records);
        let (range, cas, refresh) = match expect_reply(&mut batch, 0)? {
            Reply::ValueWithCas(range, cas) => (range, cas, false),
            Reply::Refresh(range, cas) => (range, cas, true),
            _ => {
                return Ok((
                    current,
                    Read {
                        entry: None,
                        refresh: false,
                    },
                ));
            }
        };
        let stored = batch.values().get(range).map(<[u8]>::to_vec).unwrap_or_default();
        Ok((
            current,
            Read {
                entry: Some((stored, cas)),
                refresh,
            },
        ))
    }

    /// The token of `lease` on `keys`' entry.
    fn lease_token(&self, keys: &ReadKeys, lease: Lease) -> Result<String, Error> {
        tokens::seal(&self.capability, keys, TOKEN_FORMAT, &lease.fields())
    }

    /// The lease `token` names, if it was handed out for `keys`' entry.
    fn open_lease(&self, keys: &ReadKeys, token: &str) -> Result<Lease, Error> {
        let fields = tokens::open(&self.capability, keys, token, TOKEN_FORMAT, WHAT)?;
        Lease::parse(fields).ok_or_else(|| Error::InvalidInput(format!("{token:?} is not a token {WHAT} handed out")))
    }

    /// Stores the value of a lease's key over its placeholder (or the
    /// entry it refreshes): whether it is now the entry. One round trip.
    pub fn fill(
        &mut self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Option<u32>,
        token: &str,
    ) -> Result<bool, Error> {
        super::check_ttl(ttl)?;
        let keys = ReadKeys::new(tenant, key);
        let (under, cas) = self.open_lease(&keys, token)?.basis();
        let framed = frame(under, value);
        let item = Item {
            key: keys.data_record(),
            value: &framed,
            ttl,
        };
        let size = value.len() as u64;
        let mut commands = vec![Command::SetIfCas(CasItem { item, cas })];
        commands.extend(versions_first(keys.tenant_record()));
        let mut batch = self.exchange(keys.tenant(), &commands, size)?;
        let stored = expect_reply(&mut batch, size)? == Reply::Done;
        // Stored under versions that moved, the value only hid itself.
        let records = self.read_versions_first(keys.tenant(), &mut batch)?;
        Ok(stored && versions(records) == Some(under))
    }

    /// Gives a lease back: its placeholder, if it is still this caller's,
    /// becomes one nobody holds (carrying the same stale value). Two round
    /// trips; none for a lease to refresh an entry early.
    pub fn release(&mut self, tenant: &str, key: &str, token: &str) -> Result<(), Error> {
        let keys = ReadKeys::new(tenant, key);
        let Lease::Miss { versions, holder, cas } = self.open_lease(&keys, token)? else {
            // The entry is still there; memcached lets the next store end
            // the refresh.
            return Ok(());
        };
        let mut batch = self.exchange(keys.tenant(), &[Command::GetWithCas(keys.data_record())], 0)?;
        let Reply::ValueWithCas(range, read_cas) = expect_reply(&mut batch, 0)? else {
            return Ok(());
        };
        let stale = match batch.values().get(range).and_then(frame::read) {
            Some(Stored::Lease {
                versions: under,
                holder: held_by,
                stale,
            }) if read_cas == cas && under == versions && held_by == holder => stale.to_vec(),
            // No longer this caller's placeholder.
            _ => return Ok(()),
        };
        let released = placeholder(versions, RELEASED, &stale);
        let item = Item {
            key: keys.data_record(),
            value: &released,
            ttl: Some(RELEASED_TTL),
        };
        let mut batch = self.exchange(keys.tenant(), &[replace(item, Some(cas))], 0)?;
        expect_reply(&mut batch, 0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_fields_name_the_lease() {
        let versions = Versions {
            app: 0x0123_4567_89ab_cdef,
            tenant: 7,
        };
        for lease in [
            Lease::Miss {
                versions,
                holder: 9,
                cas: 10,
            },
            Lease::Refresh { versions, cas: 11 },
        ] {
            assert_eq!(Lease::parse(&lease.fields()), Some(lease));
        }
        for forged in [
            "",
            "m:0123456789abcdef:0000000000000007",
            "m:0123456789ABCDEF:0000000000000007:0000000000000009:000000000000000a",
            "r:0123456789abcdef:0000000000000007:000000000000000a:",
            "0123456789abcdef0000000000000007",
        ] {
            assert_eq!(Lease::parse(forged), None, "{forged:?}");
        }
    }

    #[test]
    fn refresh_windows_and_lease_ttls_out_of_range_are_refused() {
        let options = |refresh_window, lease_ttl| LeaseOptions {
            accept_stale: false,
            refresh_window,
            lease_ttl,
        };
        assert!(check_options(&options(0, 2)).is_ok());
        assert!(check_options(&options(MAX_TTL, 3600)).is_ok());
        for refused in [
            options(MAX_TTL + 1, 2),
            options(1 << 31, 2),
            options(0, 1),
            options(0, 3601),
        ] {
            assert!(matches!(check_options(&refused), Err(Error::InvalidInput(_))));
        }
    }
}
