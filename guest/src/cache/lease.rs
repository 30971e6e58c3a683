//! Leases: on a miss, one caller per key and lease period computes the
//! value, across every instance, process and host; the others are told to
//! wait (`busy`), or take the entry from before the last clear if they
//! accept it (`stale`). The primitive is memcached's `add`, which stores
//! only where nothing is, and its early recache for entries about to
//! expire.
//!
//! - **get-or-lease** reads the versions and the entry in one batch, like
//!   `get`: a current entry is a hit, one round trip. On a miss a second
//!   batch `add`s the key's lease record (`l:<tenant>:<digest>`, see
//!   `tenant_cache_layout::records::lease_record`) with the lease's TTL:
//!   stored, this caller holds the lease; already there, another does. The
//!   record's key covers the versions, so a lease taken before a clear
//!   never holds a reader back after it.
//! - **early refresh**: with a refresh window, the entry is read with
//!   `get-early`; the one reader memcached tells to refresh it holds the
//!   lease for it (no second batch), every other reader hits.
//! - **fill** writes the value framed with the versions the lease was
//!   taken under (they travel in the token), so a value computed from
//!   before a clear stays hidden after it, and shortens the lease record's
//!   life to [`FILLED_TTL`]: long enough that a reader who missed just
//!   before the fill finds the lease taken and reads again (rather than
//!   computing a second time), short enough that the key's next expiry
//!   finds it gone.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use tenant_cache_layout::records::{APP_RECORD, ReadKeys, lease_record};

use super::{Cache, Capability, Record, expect_reply, from_capability, read_records, store, value_if_current};
use crate::batch::{Batch, Reply};
use crate::bindings::exports::tenant_cache::cache::tenant_cache::{Error, LeaseOptions, Lookup};
use crate::bindings::tenant_cache::cache::memcached::{Command, EarlyGet};
use crate::frame::{Stored, frame, unframe};
use crate::versions::Versions;

/// Seconds a lease record lasts once its value is filled. memcached's
/// clock ticks in whole seconds, so a TTL of N ends between N-1 and N
/// seconds later: 1 could end at once.
pub const FILLED_TTL: u32 = 2;

/// The shortest lease, for the same reason.
const MIN_LEASE_TTL: u32 = 2;

/// The longest lease: an hour.
const MAX_LEASE_TTL: u32 = 3600;

/// What a lease token starts with: its format.
const TOKEN_FORMAT: &str = "lease1:";

/// What a lease record holds while its lease is taken.
const LEASED: &[u8] = b"leased";

/// The token of a lease taken under `versions`.
fn token(versions: Versions) -> String {
    let mut token = String::from(TOKEN_FORMAT);
    // Writing into a String cannot fail.
    let _ = write!(token, "{:016x}{:016x}", versions.app, versions.tenant);
    token
}

/// The versions a token names; an error for text that is no token.
fn parse_token(token: &str) -> Result<Versions, Error> {
    let invalid = || Error::InvalidInput(format!("{token:?} is not a lease token get-or-lease handed out"));
    let rest = token.strip_prefix(TOKEN_FORMAT).ok_or_else(invalid)?;
    let hex = |digits: &str| -> Result<u64, Error> {
        let lowercase = digits.len() == 16 && digits.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        match lowercase {
            true => u64::from_str_radix(digits, 16).map_err(|_| invalid()),
            false => Err(invalid()),
        }
    };
    match (rest.get(..16), rest.get(16..)) {
        (Some(app), Some(tenant)) => Ok(Versions {
            app: hex(app)?,
            tenant: hex(tenant)?,
        }),
        _ => Err(invalid()),
    }
}

fn check_options(options: &LeaseOptions) -> Result<(), Error> {
    match options.lease_ttl {
        MIN_LEASE_TTL..=MAX_LEASE_TTL => Ok(()),
        other => Err(Error::InvalidInput(format!(
            "a lease lasts {MIN_LEASE_TTL} to {MAX_LEASE_TTL} seconds, not {other} (memcached counts whole seconds: \
             a lease of 1 could end at once)"
        ))),
    }
}

impl<C: Capability> Cache<C> {
    /// Reads one key; on a miss, takes its lease or says who has it. A hit
    /// is one round trip, a miss two (three when callers race to create
    /// the versions of a tenant that has none).
    pub fn get_or_lease(&mut self, tenant: &str, key: &str, options: &LeaseOptions) -> Result<Lookup, Error> {
        check_options(options)?;
        let keys = ReadKeys::new(tenant, key);
        let entry = match options.refresh_window {
            0 => Command::Get(keys.data_record()),
            window => Command::GetEarly(EarlyGet {
                key: keys.data_record(),
                window,
            }),
        };
        let commands = [Command::Get(APP_RECORD), Command::Get(keys.tenant_record()), entry];
        let replies = self
            .capability
            .execute(keys.tenant(), &commands)
            .map_err(|error| from_capability(error, 0))?;
        let mut batch = Batch::new(replies);
        let records = read_records(&mut batch)?;
        let current = self.learn(keys.tenant(), records);
        let (range, refresh) = match expect_reply(&mut batch, 0)? {
            Reply::Value(range) => (Some(range), false),
            Reply::Refresh(range) => (Some(range), true),
            _ => (None, false),
        };
        let values = batch.into_values();
        // A counter reads as its count, in a second round trip.
        if let (Some(current), Some(Stored::Counter(made, counter))) = (
            current,
            range.clone().and_then(|range| crate::frame::read(values.get(range)?)),
        ) && made == current
        {
            let counters = [(keys.data_record(), key, counter)];
            if let Some(count) = self.read_counts(keys.tenant(), current, &counters)?.pop().flatten() {
                return Ok(Lookup::Hit(count));
            }
        }
        let written = range
            .clone()
            .and_then(|range| unframe(values.get(range)?).map(|(written, _)| written));
        if let (Some(range), Some(current)) = (range.clone(), current)
            && written == Some(current)
        {
            // A current entry: a hit, unless this reader is the one to
            // refresh it before it expires.
            return Ok(match refresh {
                true => Lookup::Lease(token(current)),
                false => value_if_current(values, range, current).map_or(Lookup::Busy, Lookup::Hit),
            });
        }
        // A miss. The entry from before the last clear, if accepted.
        let stale = match (options.accept_stale, range) {
            (true, Some(range)) => values.get(range).and_then(unframe).map(|(_, value)| value.to_vec()),
            _ => None,
        };
        let (current, taken) = match current {
            Some(current) => (current, self.take_lease(&keys, key, current, options)?),
            // No versions yet (a tenant never written, or its records were
            // lost): they are proposed with the lease, in one batch; if
            // another caller's proposal won, the lease is taken under
            // theirs, in one more.
            None => match self.lease_with_versions(&keys, key, records, options)? {
                (Some(current), Some(taken)) => (current, taken),
                (Some(current), None) => (current, self.take_lease(&keys, key, current, options)?),
                (None, _) => return Ok(stale.map_or(Lookup::Busy, Lookup::Stale)),
            },
        };
        Ok(match taken {
            true => Lookup::Lease(token(current)),
            false => stale.map_or(Lookup::Busy, Lookup::Stale),
        })
    }

    /// Adds the lease record of `key` under `versions`: whether this
    /// caller took the lease.
    fn take_lease(
        &mut self,
        keys: &ReadKeys,
        key: &str,
        versions: Versions,
        options: &LeaseOptions,
    ) -> Result<bool, Error> {
        let lease = lease_record(keys.tenant(), (versions.app, versions.tenant), key);
        let replies = self
            .capability
            .execute(keys.tenant(), &[store(&lease, LEASED, Some(options.lease_ttl), true)])
            .map_err(|error| from_capability(error, 0))?;
        Ok(expect_reply(&mut Batch::new(replies), 0)? == Reply::Done)
    }

    /// For a tenant whose version `records` are not both versions: proposes
    /// them (as a write does: `add` where missing, `set` over something
    /// that is not a version) and adds the lease under the proposal, in one
    /// batch. The versions read back, and whether the lease was taken if
    /// they are the ones proposed.
    fn lease_with_versions(
        &mut self,
        keys: &ReadKeys,
        key: &str,
        records: [Record; 2],
        options: &LeaseOptions,
    ) -> Result<(Option<Versions>, Option<bool>), Error> {
        let (proposed, proposals) = self.propose(records, keys.tenant_record());
        let lease = lease_record(keys.tenant(), (proposed.app, proposed.tenant), key);
        let mut commands: Vec<Command<'_>> = proposals
            .iter()
            .map(|(key, record, add)| store(key, record, None, *add))
            .collect();
        commands.push(store(&lease, LEASED, Some(options.lease_ttl), true));
        commands.push(Command::Get(APP_RECORD));
        commands.push(Command::Get(keys.tenant_record()));
        let replies = self
            .capability
            .execute(keys.tenant(), &commands)
            .map_err(|error| from_capability(error, 0))?;
        let mut batch = Batch::new(replies);
        for _ in &proposals {
            expect_reply(&mut batch, 0)?;
        }
        let leased = expect_reply(&mut batch, 0)? == Reply::Done;
        let records = read_records(&mut batch)?;
        let current = self.learn(keys.tenant(), records);
        Ok((current, (current == Some(proposed)).then_some(leased)))
    }

    /// Stores the value of a lease's key: one round trip (none when this
    /// instance knows the tenant was cleared since the lease was taken).
    pub fn fill(&mut self, tenant: &str, key: &str, value: &[u8], ttl: Option<u32>, token: &str) -> Result<(), Error> {
        super::check_ttl(ttl)?;
        let versions = parse_token(token)?;
        let keys = ReadKeys::new(tenant, key);
        let lease = lease_record(keys.tenant(), (versions.app, versions.tenant), key);
        let filled = store(&lease, b"filled", Some(FILLED_TTL), false);
        if self.versions.get(keys.tenant()).is_some_and(|known| known != versions) {
            // Cleared since the lease was taken: the value would only hide
            // itself, and could hide an entry written since.
            return Ok(());
        }
        let framed = frame(versions, value);
        let commands = [
            store(keys.data_record(), &framed, ttl, false),
            filled,
            Command::Get(APP_RECORD),
            Command::Get(keys.tenant_record()),
        ];
        let size = value.len() as u64;
        let replies = self
            .capability
            .execute(keys.tenant(), &commands)
            .map_err(|error| from_capability(error, size))?;
        let mut batch = Batch::new(replies);
        expect_reply(&mut batch, size)?;
        expect_reply(&mut batch, 0)?;
        // Whether the versions moved or not, the fill is done: under moved
        // versions the value hid itself.
        let records = read_records(&mut batch)?;
        self.learn(keys.tenant(), records);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_the_versions_their_lease_was_taken_under() {
        let versions = Versions {
            app: 0x0123_4567_89ab_cdef,
            tenant: 7,
        };
        assert_eq!(parse_token(&token(versions)).ok(), Some(versions));
        for forged in [
            "",
            "lease1:",
            "lease1:-",
            "lease2:0123456789abcdef0000000000000007",
            "lease1:0123",
            "lease1:0123456789ABCDEF0000000000000007",
            "lease1:0123456789abcdef00000000000000070",
            "lease1:+123456789abcdef0000000000000007",
        ] {
            assert!(matches!(parse_token(forged), Err(Error::InvalidInput(_))), "{forged:?}");
        }
    }
}
