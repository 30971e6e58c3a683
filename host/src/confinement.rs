//! What a grant bound to one tenant lets a component do, whatever the
//! component sends. The component serving a bound grant may be ours, a
//! composed one, or an app importing the capability itself: the host
//! checks every batch against the tenant's records
//! ([`tenant_cache_layout::records`]) before anything is sent.
//!
//! With the tenant's part `P`:
//! - `execute` takes route `P` only: every record of the tenant lives on
//!   its server, under its tag;
//! - `d:P:<key>` (the tenant's entries), `l:P:<digest>` (their leases)
//!   and `c:P:<digest>` (their counts) may be read, written and removed;
//! - `n:P` (the tenant version) may be read and removed, and written only
//!   with a version the host drew for this grant (`random-u64`), each used
//!   once (so never by `set-if-cas` or `increment`): the component can
//!   move its tenant's version, never set it back to one it saw, so the
//!   operator's `clear` stays done;
//! - `a` (the application version, shared by every tenant on the server)
//!   may be read, and written only with `add` (where no server copy is
//!   left), without a TTL, with a version the host drew: what every other
//!   tenant reads cannot change, nor be set back to an old version;
//! - any other key (another tenant's records) is refused, and so is
//!   `broadcast`.

use std::collections::VecDeque;
use std::sync::Arc;

use tenant_cache_layout::parts::encode_part;
use tenant_cache_layout::records::{Record, record_of};
use tenant_cache_layout::version::parse_record;

use crate::bindings::capability::{Command, Error, Item};

/// Versions drawn for a grant and not yet written, kept at most: a
/// component writes at most two per batch (the application and the tenant
/// version).
const ISSUED: usize = 16;

/// The binding of a grant to one tenant, and the versions drawn for it.
#[derive(Clone, Debug)]
pub(crate) struct Confinement {
    tenant: Arc<str>,
    /// The tenant's part: its route, and the middle of its records' keys.
    part: Arc<str>,
    /// Versions `random-u64` returned on this grant, not yet written.
    issued: VecDeque<u64>,
}

impl Confinement {
    /// The confinement of a grant bound to `tenant`.
    pub(crate) fn new(tenant: &str) -> Confinement {
        Confinement {
            tenant: tenant.into(),
            part: encode_part(tenant).into(),
            issued: VecDeque::new(),
        }
    }

    /// The tenant the grant is bound to.
    pub(crate) fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant's part.
    pub(crate) fn part(&self) -> &str {
        &self.part
    }

    /// A fresh random value, which the component may then write once as a
    /// version.
    pub(crate) fn issue(&mut self) -> u64 {
        let fresh = rand::random();
        if self.issued.len() == ISSUED {
            self.issued.pop_front();
        }
        self.issued.push_back(fresh);
        fresh
    }

    /// Whether the batch `commands` for `route` stays within the tenant's
    /// records. The versions it writes are used up only if it does.
    pub(crate) fn admit(&mut self, route: &str, commands: &[Command]) -> Result<(), Error> {
        if route != &*self.part {
            return Err(self.denied(format!("route {route:?} is another tenant's")));
        }
        let mut used = Vec::new();
        for command in commands {
            let (key, store) = match command {
                Command::Get(key) | Command::Delete(key) | Command::GetWithCas(key) => (key, None),
                Command::GetEarly(early) => (&early.key, None),
                Command::Increment(delta) => (&delta.key, None),
                Command::Set(item) => (&item.key, Some((item, false))),
                Command::Add(item) => (&item.key, Some((item, true))),
                Command::SetIfCas(cas_item) => (&cas_item.item.key, None),
            };
            let record = record_of(&self.part, key).ok_or_else(|| self.denied(format!("key {key:?} is not its")))?;
            match (record, command, store) {
                (Record::Entry | Record::Lease | Record::Counter, ..) => {}
                (Record::Tenant | Record::App, Command::Get(_) | Command::GetEarly(_) | Command::GetWithCas(_), _) => {}
                (Record::Tenant, Command::Delete(_), _) => {}
                (Record::Tenant, _, Some((item, _))) => used.push(self.version_in(item, &used)?),
                (Record::App, _, Some((item, true))) if item.ttl.is_none() => used.push(self.version_in(item, &used)?),
                (Record::App, ..) => {
                    return Err(self.denied(String::from(
                        "the application version is every tenant's: it may only be read, or created where it \
                         is missing",
                    )));
                }
                (Record::Tenant, ..) => return Err(self.denied(format!("{command:?} is not allowed"))),
            }
        }
        for version in used {
            if let Some(at) = self.issued.iter().position(|&issued| issued == version) {
                self.issued.remove(at);
            }
        }
        Ok(())
    }

    /// `broadcast` reaches every tenant: a bound grant has none.
    pub(crate) fn admit_broadcast(&self) -> Result<(), Error> {
        Err(self.denied(String::from("broadcast reaches every tenant")))
    }

    /// The version `item` writes, if the host drew it for this grant and
    /// the batch being checked has not `used` it already.
    fn version_in(&self, item: &Item, used: &[u64]) -> Result<u64, Error> {
        parse_record(&item.value)
            .filter(|version| self.issued.contains(version) && !used.contains(version))
            .ok_or_else(|| {
                self.denied(format!(
                    "a version written to {:?} must be one random-u64 returned on this grant, used once",
                    item.key
                ))
            })
    }

    fn denied(&self, why: String) -> Error {
        Error::Denied(format!("this grant is bound to tenant {:?}: {why}", self.tenant))
    }
}

#[cfg(test)]
mod tests {
    use tenant_cache_layout::records::{APP_RECORD, data_record, tenant_record};
    use tenant_cache_layout::version::record_value;

    use super::*;

    fn store(key: &str, value: Vec<u8>, ttl: Option<u32>) -> Item {
        Item {
            key: key.into(),
            value,
            ttl,
        }
    }

    fn denied(result: Result<(), Error>) -> bool {
        matches!(result, Err(Error::Denied(message)) if message.contains("\"acme\""))
    }

    #[test]
    fn a_bound_grant_reaches_its_tenants_records_only() {
        let mut acme = Confinement::new("acme");
        let (own, entry) = (tenant_record("acme"), data_record("acme", "k"));
        let lease = tenant_cache_layout::records::lease_record("acme", (1, 2), "k");
        let reads = [APP_RECORD, &own, &entry, &lease].map(|key| Command::Get(key.into()));
        assert!(acme.admit("acme", &reads).is_ok());
        assert!(
            acme.admit("acme", &[Command::Delete(entry.clone()), Command::Delete(own.clone())])
                .is_ok()
        );
        let writes = [
            Command::Set(store(&entry, b"anything".to_vec(), Some(5))),
            Command::Add(store(&entry, b"anything".to_vec(), None)),
        ];
        assert!(acme.admit("acme", &writes).is_ok());
        for other in ["globex", "acm", "acme:", "", "acme%3Ax"] {
            let part = encode_part(other);
            for command in [
                Command::Get(tenant_record(&part)),
                Command::Get(data_record(&part, "secret")),
                Command::Add(store(
                    &tenant_cache_layout::records::lease_record(&part, (3, 4), "secret"),
                    b"leased".to_vec(),
                    Some(10),
                )),
                Command::Delete(data_record(&part, "secret")),
                Command::Set(store(&data_record(&part, "secret"), b"forged".to_vec(), None)),
                Command::Set(store(&tenant_record(&part), record_value(acme.issue()), None)),
            ] {
                assert!(
                    denied(acme.admit("acme", std::slice::from_ref(&command))),
                    "{command:?}"
                );
            }
            // The tenant's own records, on another tenant's route.
            assert!(denied(acme.admit(&part, &reads)), "route {part:?}");
        }
        for stray in ["~pool", "tc:pool", "n:", "d:acme", "x"] {
            assert!(denied(acme.admit("acme", &[Command::Get(stray.into())])), "{stray}");
        }
        assert!(denied(acme.admit_broadcast()));
    }

    #[test]
    fn versions_are_written_only_as_fresh_draws_each_used_once() {
        let mut acme = Confinement::new("acme");
        let own = tenant_record("acme");
        // A version the component chose, or read earlier: refused.
        let old = record_value(0x1234);
        assert!(denied(acme.admit("acme", &[Command::Set(store(&own, old, None))])));
        let fresh = acme.issue();
        let clear = [Command::Set(store(&own, record_value(fresh), None))];
        assert!(acme.admit("acme", &clear).is_ok());
        assert!(denied(acme.admit("acme", &clear)), "a draw written twice");
        // The application version: `add` of a fresh draw without a TTL, only.
        let app =
            |command: fn(Item) -> Command, version: u64, ttl| command(store(APP_RECORD, record_value(version), ttl));
        let fresh = acme.issue();
        assert!(denied(acme.admit("acme", &[app(Command::Set, fresh, None)])));
        assert!(denied(acme.admit("acme", &[app(Command::Add, fresh, Some(1))])));
        assert!(denied(acme.admit("acme", &[Command::Delete(APP_RECORD.into())])));
        assert!(denied(acme.admit("acme", &[app(Command::Add, fresh ^ 1, None)])));
        assert!(acme.admit("acme", &[app(Command::Add, fresh, None)]).is_ok());
        // A refused batch uses up nothing.
        let (first, second) = (acme.issue(), acme.issue());
        let batch = [
            app(Command::Add, first, None),
            Command::Set(store(&own, record_value(second), None)),
            Command::Get("n:globex".into()),
        ];
        assert!(denied(acme.admit("acme", &batch)));
        assert!(acme.admit("acme", &batch[..2]).is_ok());
        // Only the last draws are kept.
        let early = acme.issue();
        for _ in 0..ISSUED {
            acme.issue();
        }
        assert!(denied(
            acme.admit("acme", &[Command::Set(store(&own, record_value(early), None))])
        ));
    }
}
