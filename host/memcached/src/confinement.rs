//! What a grant bound to one tenant lets a component do, whatever the
//! component sends. The component serving a bound grant may be ours, a
//! composed one, or an app importing the capability itself: the host
//! checks every batch against the tenant's records
//! ([`tenant_cache_layout::records`]) before anything is sent.
//!
//! With the tenant's part `P`:
//! - `execute` (and `mac`) take route `P` only: every record of the tenant
//!   lives on its server, under its tag;
//! - `d:P:<key>` (the tenant's entries, and their leases' placeholders)
//!   and `c:P:<digest>` (their counts) may be read, written and removed;
//! - `n:P` (the tenant version) may be read and removed, and written only
//!   by `new-version`, whose version the host draws as it stores it: the
//!   component can move its tenant's version, never set it to one it
//!   knew before it was stored, so nothing it wrote beforehand under that
//!   version can come back, and the operator's `clear` stays done;
//! - `a` (the application version, shared by every tenant on the server)
//!   may be read, and written only by `new-version` with `create` (where
//!   no server copy is left): what every other tenant reads cannot change;
//! - any other key (another tenant's records) is refused, and so is
//!   `broadcast`.

use std::sync::Arc;

use tenant_cache_layout::parts::encode_part;
use tenant_cache_layout::records::{Record, record_of};

use crate::types::{Command, Error, NewVersion, VersionWrite};

/// The binding of a grant to one tenant.
#[derive(Clone, Debug)]
pub struct Confinement {
    tenant: Arc<str>,
    /// The tenant's part: its route, and the middle of its records' keys.
    part: Arc<str>,
}

impl Confinement {
    /// The confinement of a grant bound to `tenant`.
    pub fn new(tenant: &str) -> Confinement {
        Confinement {
            tenant: tenant.into(),
            part: encode_part(tenant).into(),
        }
    }

    /// The tenant the grant is bound to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant's part.
    pub fn part(&self) -> &str {
        &self.part
    }

    /// Whether `route` is the tenant's.
    pub fn admit_route(&self, route: &str) -> Result<(), Error> {
        match route == &*self.part {
            true => Ok(()),
            false => Err(self.denied(format!("route {route:?} is another tenant's"))),
        }
    }

    /// Whether the batch `commands` for `route` stays within the tenant's
    /// records.
    pub fn admit(&self, route: &str, commands: &[Command]) -> Result<(), Error> {
        self.admit_route(route)?;
        for command in commands {
            let key = match command {
                Command::Get(key) | Command::Delete(key) | Command::GetWithCas(key) => key,
                Command::GetEarly(early) => &early.key,
                Command::Increment(delta) => &delta.key,
                Command::Set(item) | Command::Add(item) => &item.key,
                Command::SetIfCas(cas_item) => &cas_item.item.key,
                Command::NewVersion(new) => &new.key,
            };
            let record = record_of(&self.part, key).ok_or_else(|| self.denied(format!("key {key:?} is not its")))?;
            match (record, command) {
                (Record::Entry | Record::Counter, Command::NewVersion(_)) => {
                    return Err(self.denied(String::from("new-version writes version records only")));
                }
                (Record::Entry | Record::Counter, _) => {}
                (Record::Tenant | Record::App, Command::Get(_) | Command::GetEarly(_) | Command::GetWithCas(_)) => {}
                (Record::Tenant, Command::Delete(_) | Command::NewVersion(_)) => {}
                (
                    Record::App,
                    Command::NewVersion(NewVersion {
                        write: VersionWrite::Create,
                        ..
                    }),
                ) => {}
                (Record::App, _) => {
                    return Err(self.denied(String::from(
                        "the application version is every tenant's: it may only be read, or created where it \
                         is missing",
                    )));
                }
                (Record::Tenant, _) => {
                    return Err(self.denied(format!(
                        "{command:?}: its version is written only with a version the host draws (new-version)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `broadcast` reaches every tenant: a bound grant has none.
    pub fn admit_broadcast(&self) -> Result<(), Error> {
        Err(self.denied(String::from("broadcast reaches every tenant")))
    }

    fn denied(&self, why: String) -> Error {
        Error::Denied(format!("this grant is bound to tenant {:?}: {why}", self.tenant))
    }
}

#[cfg(test)]
mod tests {
    use tenant_cache_layout::records::{APP_RECORD, counter_record, data_record, tenant_record};
    use tenant_cache_layout::version::record_value;

    use super::*;
    use crate::types::{CasItem, CounterDelta, Item};

    fn store(key: &str, value: Vec<u8>, ttl: Option<u32>) -> Item {
        Item {
            key: key.into(),
            value,
            ttl,
        }
    }

    fn new_version(key: &str, write: VersionWrite) -> Command {
        Command::NewVersion(NewVersion { key: key.into(), write })
    }

    fn denied(result: Result<(), Error>) -> bool {
        matches!(result, Err(Error::Denied(message)) if message.contains("\"acme\""))
    }

    #[test]
    fn a_bound_grant_reaches_its_tenants_records_only() {
        let acme = Confinement::new("acme");
        let (own, entry) = (tenant_record("acme"), data_record("acme", "k"));
        let count = counter_record("acme", (1, 2), 3, "k");
        let reads = [APP_RECORD, &own, &entry, &count].map(|key| Command::Get(key.into()));
        assert!(acme.admit("acme", &reads).is_ok());
        assert!(
            acme.admit("acme", &[Command::Delete(entry.clone()), Command::Delete(own.clone())])
                .is_ok()
        );
        let writes = [
            Command::Set(store(&entry, b"anything".to_vec(), Some(5))),
            Command::Add(store(&entry, b"anything".to_vec(), None)),
            Command::SetIfCas(CasItem {
                item: store(&count, b"1".to_vec(), None),
                cas: 1,
            }),
        ];
        assert!(acme.admit("acme", &writes).is_ok());
        assert!(acme.admit_route("acme").is_ok());
        for other in ["globex", "acm", "acme:", "", "acme%3Ax"] {
            let part = encode_part(other);
            for command in [
                Command::Get(tenant_record(&part)),
                Command::Get(data_record(&part, "secret")),
                Command::Delete(data_record(&part, "secret")),
                Command::Set(store(&data_record(&part, "secret"), b"forged".to_vec(), None)),
                new_version(&tenant_record(&part), VersionWrite::Overwrite),
            ] {
                assert!(
                    denied(acme.admit("acme", std::slice::from_ref(&command))),
                    "{command:?}"
                );
            }
            // The tenant's own records, on another tenant's route.
            assert!(denied(acme.admit(&part, &reads)), "route {part:?}");
            assert!(denied(acme.admit_route(&part)), "mac on route {part:?}");
        }
        for stray in ["~pool", "tc:pool", "n:", "d:acme", "l:acme:0123", "x"] {
            assert!(denied(acme.admit("acme", &[Command::Get(stray.into())])), "{stray}");
        }
        assert!(denied(acme.admit_broadcast()));
    }

    #[test]
    fn versions_are_written_only_as_versions_the_host_draws() {
        let acme = Confinement::new("acme");
        let own = tenant_record("acme");
        // Any value the component chose, however it stores it: refused.
        let chosen = || record_value(0x1234);
        for command in [
            Command::Set(store(&own, chosen(), None)),
            Command::Add(store(&own, chosen(), None)),
            Command::SetIfCas(CasItem {
                item: store(&own, chosen(), None),
                cas: 1,
            }),
            Command::Increment(CounterDelta {
                key: own.clone(),
                delta: 1,
            }),
            Command::Set(store(APP_RECORD, chosen(), None)),
            Command::Add(store(APP_RECORD, chosen(), None)),
            Command::Delete(APP_RECORD.into()),
            new_version(APP_RECORD, VersionWrite::Overwrite),
            new_version(APP_RECORD, VersionWrite::Replace(1)),
            new_version(&data_record("acme", "k"), VersionWrite::Overwrite),
        ] {
            assert!(
                denied(acme.admit("acme", std::slice::from_ref(&command))),
                "{command:?}"
            );
        }
        // Drawn by the host: its own version in every way, the application
        // version only where it is missing.
        let allowed = [
            new_version(&own, VersionWrite::Overwrite),
            new_version(&own, VersionWrite::Create),
            new_version(&own, VersionWrite::Replace(7)),
            new_version(APP_RECORD, VersionWrite::Create),
        ];
        assert!(acme.admit("acme", &allowed).is_ok());
        // A batch with one refused command is refused whole.
        let mixed = [
            new_version(&own, VersionWrite::Overwrite),
            Command::Get("n:globex".into()),
        ];
        assert!(denied(acme.admit("acme", &mixed)));
    }
}
