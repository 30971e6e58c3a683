//! The memcached capability as the component sees it: keys are scoped to
//! the application the host granted (and, on a bound grant, to one tenant:
//! `confinement`), every command is checked against the grant's rules
//! before anything is sent, and there is no flush.

mod convert;
mod linker;

use std::sync::Arc;

use tenant_cache_layout::records::{Record, record_of};
use tenant_cache_memcached::Rewrites;
use tenant_cache_memcached::budget::Cost;
use tenant_cache_memcached::confinement::Confinement;
use tenant_cache_memcached::rules::{self, Rules};
use tenant_cache_memcached::types::{Command, Error, Limit, Outcome, Replies};

use crate::backend::Backend;
use crate::bindings::capability as wit;
pub use linker::{add_to_linker, add_to_linker_async};
pub use tenant_cache_memcached::budget::{Budgets, Rate};
pub use tenant_cache_memcached::rules::{BatchLimits, MAX_RELATIVE_KEY};

/// The memcached capability granted to a component for one application:
/// every command passes the rules of `tenant_cache_memcached` (their one
/// owner, which the memcached provider component applies too) before
/// anything is sent.
///
/// Every key the component sends is prefixed with `tc:<app>:`, where
/// `<app>` is the application name percent-encoded (or, when long, a
/// SHA-256 digest), so two applications can never reach each other's
/// keys. Cloning is cheap; clones share the backend's connections.
#[derive(Clone)]
pub struct Grant {
    backend: Backend,
    app: Arc<str>,
    prefix: Arc<str>,
    limits: BatchLimits,
    tenant_labels: bool,
    /// The one tenant the component may serve, if the grant is bound.
    bound: Option<Confinement>,
    /// Where the memo keeps this grant's entries: the application's, or on
    /// a bound grant the tenant's own, so a bound component can neither
    /// read nor skew what instances of other tenants recall.
    memo_scope: Arc<str>,
    /// What the grant may spend, from the buckets of `memo_scope` (its
    /// application's, or its tenant's on a bound grant).
    budgets: Budgets,
    /// Batches sent, one per server reached (`tenant_cache_round_trips_total`).
    round_trips: metrics::Counter,
}

/// The interface the grant implements, as components import it.
const INTERFACE: &str = "tenant-cache:cache/memcached@0.8.0";

impl Grant {
    /// Grants access to `backend` for the application `app`, with the
    /// default [`BatchLimits`]. Any name is accepted: it is encoded, never
    /// sent as it is.
    pub fn new(backend: Backend, app: &str) -> Grant {
        let prefix: Arc<str> = rules::app_prefix(app).into();
        Grant {
            backend,
            app: app.into(),
            memo_scope: prefix.clone(),
            prefix,
            limits: BatchLimits::default(),
            tenant_labels: false,
            bound: None,
            budgets: Budgets::default(),
            round_trips: crate::observe::round_trips_counter(app),
        }
    }

    /// The same grant, with the tenant among the labels of the metrics its
    /// calls record (off by default: each tenant is a label set).
    pub fn with_tenant_labels(self, on: bool) -> Grant {
        Grant {
            tenant_labels: on,
            ..self
        }
    }

    /// The same grant, bound to `tenant`: the component then serves that
    /// tenant only. Every `wasi:keyvalue` bucket it opens lives inside the
    /// tenant (see [`keyvalue`](crate::keyvalue)), and calls naming another
    /// tenant, or clearing every tenant, fail with `invalid-input`.
    ///
    /// The host enforces the binding, not the component: whatever
    /// component is given this grant (the built-in one, a composed one, or
    /// an app importing the capability itself) reaches only the tenant's
    /// records, cannot write what other tenants read, and cannot set its
    /// tenant's version back to one from before a clear; anything else is
    /// refused with `denied` before it is sent. A platform binds the
    /// tenant of the customer whose app it runs (docs/trust.md).
    pub fn bound_to(self, tenant: &str) -> Grant {
        let bound = Confinement::new(tenant);
        Grant {
            memo_scope: format!("{}\n{}", self.prefix, bound.part()).into(),
            bound: Some(bound),
            ..self
        }
    }

    /// The tenant this grant is bound to, if any.
    pub fn bound_tenant(&self) -> Option<&str> {
        self.bound.as_ref().map(Confinement::tenant)
    }

    /// The application this grant is for.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Whether metrics carry the tenant as a label.
    pub(crate) fn tenant_labels(&self) -> bool {
        self.tenant_labels
    }

    /// The same grant with `budgets`: what it may write and send per
    /// second, and how long its entries may live. On a bound grant they are
    /// its tenant's share: every grant bound to the tenant over this
    /// backend (every instance, on any thread or task) spends from the
    /// same buckets, so give them all the same budgets. A batch the budgets
    /// cannot pay for fails whole with `over-limit(budget(..))`, saying
    /// which budget and when to retry, and nothing of it is sent. Without
    /// budgets (the default), a grant has no bound but its limits.
    pub fn with_budgets(self, budgets: Budgets) -> Grant {
        Grant { budgets, ..self }
    }

    /// The grant's budgets.
    pub fn budgets(&self) -> Budgets {
        self.budgets
    }

    /// The same grant with other limits on one call.
    pub fn with_limits(self, limits: BatchLimits) -> Grant {
        Grant { limits, ..self }
    }

    /// The limits on one call.
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// The prefix every key of this application carries in memcached.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The backend this grant stores into.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The rules every batch of this grant passes.
    fn rules(&self) -> Rules<'_> {
        Rules {
            prefix: &self.prefix,
            limits: self.limits,
            item_size_limit: self.backend.item_size_limit(),
        }
    }

    /// The item size limit a value of `len` bytes breaks whatever its key,
    /// if it breaks it: [`TenantCache`](crate::TenantCache) asks before it
    /// even copies a value into the component.
    pub(crate) fn refuses_value(&self, len: usize) -> Option<u64> {
        self.rules().refuses_value(len)
    }

    /// Checks a batch for `route` against every rule of the grant (its
    /// binding first), and rewrites what is not sent as it is (see
    /// [`Rules::check_commands`]).
    fn admit(&mut self, route: &str, commands: &mut Vec<Command>) -> Result<Rewrites, Error> {
        let admitted = match &self.bound {
            Some(bound) => bound.admit(route, commands),
            None => Ok(()),
        };
        // Capped as the component sent them: the versions it asks for are
        // no stores yet, and must not expire.
        self.budgets.cap_ttls(commands);
        let admitted = admitted
            .and_then(|()| self.rules().check_commands(commands))
            .and_then(|rewrites| self.charge(commands).map(|()| rewrites));
        if let Err(Error::OverLimit(Limit::Budget(_))) = &admitted {
            let refused = crate::usage::Counts {
                budget_refusals: 1,
                ..Default::default()
            };
            self.backend
                .usage()
                .record(&self.app, self.usage_tenant(route), refused);
        }
        self.observe_refusal(admitted)
    }

    /// Pays for `commands` from the grant's buckets, if it has budgets:
    /// the last check, so a batch refused otherwise spends nothing.
    fn charge(&self, commands: &[Command]) -> Result<(), Error> {
        if !self.budgets.is_set() {
            return Ok(());
        }
        self.backend
            .ledger()
            .charge(&self.memo_scope, &self.budgets, Cost::of(commands))
            .map_err(|over| Error::OverLimit(Limit::Budget(over)))
    }

    /// Who a batch for `route` is counted for: the bound tenant, or on an
    /// unbound grant the route (the tenant's name as keys carry it).
    fn usage_tenant<'a>(&'a self, route: &'a str) -> &'a str {
        self.bound_tenant().unwrap_or(route)
    }

    /// [`admit`](Self::admit) for a broadcast: no store may be too large.
    /// Returns the versions drawn for its `new-version` commands.
    fn admit_broadcast(&mut self, commands: &mut Vec<Command>) -> Result<Vec<u64>, Error> {
        let admitted = match &self.bound {
            Some(bound) => bound.admit_broadcast(),
            None => Ok(()),
        };
        self.budgets.cap_ttls(commands);
        let admitted = admitted
            .and_then(|()| self.rules().check_broadcast(commands))
            .and_then(|minted| self.charge(commands).map(|()| minted));
        self.observe_refusal(admitted)
    }

    /// Counts and logs a refused batch.
    fn observe_refusal<T>(&self, admitted: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &admitted {
            let reason = match error {
                Error::OverLimit(Limit::Budget(_)) => "budget",
                Error::OverLimit(_) => "over_limit",
                Error::Denied(_) => "denied",
                _ => "invalid_key",
            };
            crate::observe::refused(&self.app, reason, &tenant_cache_memcached::protocol::describe(error));
        }
        admitted
    }

    /// The code that authenticates `message` for `route` (the `mac`
    /// function): HMAC-SHA-256 under the backend's token key, over the
    /// application's prefix, the route and the message, cut to 16 bytes.
    fn code(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, Error> {
        if let Some(bound) = &self.bound {
            bound.admit_route(route)?;
        }
        tenant_cache_memcached::tokens::code(self.backend.token_key(), &self.prefix, route, message)
    }
}

/// The capability's calls, once the grant admitted them; the synchronous
/// `Host` and the async functions below only differ in how they wait.
impl Grant {
    fn run(&self, route: &str, commands: Vec<Command>, rewrites: Rewrites) -> Result<Replies, Error> {
        self.round_trips.increment(1);
        let sent = self.sending(route, &commands);
        // The route only picks a server; it is never sent to memcached.
        let storage = self.backend.storage();
        let mut replies = storage.execute(&self.prefix, route.as_bytes(), commands, self.limits.reply_bytes)?;
        rewrites.apply(&mut replies);
        self.answered(route, sent, &replies);
        Ok(replies)
    }

    async fn run_async(&self, route: &str, commands: Vec<Command>, rewrites: Rewrites) -> Result<Replies, Error> {
        self.round_trips.increment(1);
        let sent = self.sending(route, &commands);
        let storage = self.backend.storage();
        let mut replies = storage
            .execute_async(&self.prefix, route.as_bytes(), commands, self.limits.reply_bytes)
            .await?;
        rewrites.apply(&mut replies);
        self.answered(route, sent, &replies);
        Ok(replies)
    }

    /// What a batch for `route` will tell of its tenant's usage once
    /// answered: the bytes it writes, and which of its commands read the
    /// tenant's entries.
    fn sending(&self, route: &str, commands: &[Command]) -> Sending {
        let part = self.bound.as_ref().map_or(route, Confinement::part);
        let entry_reads = commands
            .iter()
            .enumerate()
            .filter(|(_, command)| match command {
                Command::Get(key) | Command::GetWithCas(key) => record_of(part, key) == Some(Record::Entry),
                Command::GetEarly(early) => record_of(part, &early.key) == Some(Record::Entry),
                _ => false,
            })
            .map(|(index, _)| index)
            .collect();
        Sending {
            bytes_written: Cost::of(commands).bytes_written,
            entry_reads,
        }
    }

    /// Counts an answered batch in its tenant's usage: an entry read is a
    /// hit when memcached found the entry.
    fn answered(&self, route: &str, sent: Sending, replies: &Replies) {
        let (mut hits, mut misses) = (0, 0);
        for outcome in sent.entry_reads.iter().filter_map(|&index| replies.outcomes.get(index)) {
            match outcome {
                Outcome::Miss => misses += 1,
                Outcome::Failed(_) => {}
                _ => hits += 1,
            }
        }
        let counts = crate::usage::Counts {
            batches: 1,
            bytes_written: sent.bytes_written,
            hits,
            misses,
            budget_refusals: 0,
        };
        self.backend.usage().record(&self.app, self.usage_tenant(route), counts);
    }

    fn run_broadcast(&self, commands: Vec<Command>) -> Result<(), Error> {
        self.round_trips.increment(self.backend.storage().servers() as u64);
        self.backend.storage().broadcast(&self.prefix, commands)
    }

    async fn run_broadcast_async(&self, commands: Vec<Command>) -> Result<(), Error> {
        self.round_trips.increment(self.backend.storage().servers() as u64);
        self.backend.storage().broadcast_async(&self.prefix, commands).await
    }
}

/// A batch on its way, as its tenant's usage counts it.
struct Sending {
    bytes_written: u64,
    /// The indexes of the commands reading the tenant's entries.
    entry_reads: Vec<usize>,
}

/// The capability's functions as the component calls them: its values
/// converted at the edge (`convert`).
impl wit::Host for Grant {
    fn execute(&mut self, route: String, commands: Vec<wit::Command>) -> Result<wit::Replies, wit::Error> {
        let mut commands = convert::commands(commands);
        let replies = self
            .admit(&route, &mut commands)
            .and_then(|rewrites| self.run(&route, commands, rewrites));
        replies.map(convert::replies).map_err(convert::error)
    }

    fn broadcast(&mut self, commands: Vec<wit::Command>) -> Result<Vec<u64>, wit::Error> {
        let mut commands = convert::commands(commands);
        let minted = self.admit_broadcast(&mut commands).map_err(convert::error)?;
        self.run_broadcast(commands).map(|()| minted).map_err(convert::error)
    }

    fn random_u64(&mut self) -> u64 {
        rand::random()
    }

    fn mac(&mut self, route: String, message: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        self.code(&route, &message).map_err(convert::error)
    }

    fn memo_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.backend.memo().get(&self.memo_scope, &key)
    }

    fn memo_put(&mut self, key: String, value: Option<Vec<u8>>) {
        self.backend.memo().put(&self.memo_scope, &key, value.as_deref())
    }

    fn bound_tenant(&mut self) -> Option<String> {
        Grant::bound_tenant(self).map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::capability::{CasItem, Command, Error, Item, Outcome};
    use wit::Host;

    /// An embedded grant whose key `k` holds `old`, and its item size limit.
    fn holding_old() -> (Grant, u64) {
        let mut grant = Grant::new(Backend::embedded(), "shop");
        let limit = grant.backend().item_size_limit();
        grant
            .execute("t".into(), vec![Command::Set(item("k", b"old".to_vec()))])
            .unwrap();
        (grant, limit)
    }

    fn item(key: &str, value: Vec<u8>) -> Item {
        Item {
            key: key.into(),
            value,
            ttl: None,
        }
    }

    #[test]
    fn an_oversized_set_removes_its_key_and_fails_alone() {
        let (mut grant, limit) = holding_old();
        let replies = grant
            .execute(
                "t".into(),
                vec![
                    Command::Set(item("other", b"v".to_vec())),
                    Command::Set(item("k", vec![0; limit as usize])),
                    Command::Get("k".into()),
                    Command::Get("other".into()),
                ],
            )
            .unwrap();
        assert_eq!(
            replies.outcomes,
            [
                Outcome::Done,
                Outcome::Failed(Error::ValueTooLarge(limit)),
                Outcome::Miss,
                Outcome::Value(1)
            ]
        );
    }

    /// An `add` or a compare-and-swap is a store only over what was read:
    /// one that cannot fit changes nothing (a removal would be a write of
    /// its own, over whatever is there now).
    #[test]
    fn an_oversized_conditional_store_is_not_sent_and_changes_nothing() {
        let (mut grant, limit) = holding_old();
        let oversized = [
            Command::Add(item("k", vec![0; limit as usize])),
            Command::SetIfCas(CasItem {
                item: item("k", vec![0; limit as usize]),
                cas: 1,
            }),
        ];
        for conditional in oversized {
            let replies = grant
                .execute(
                    "t".into(),
                    vec![
                        Command::Set(item("other", b"v".to_vec())),
                        conditional.clone(),
                        Command::Get("k".into()),
                        conditional,
                        Command::Get("other".into()),
                    ],
                )
                .unwrap();
            assert_eq!(
                replies.outcomes,
                [
                    Outcome::Done,
                    Outcome::Failed(Error::ValueTooLarge(limit)),
                    Outcome::Value(3),
                    Outcome::Failed(Error::ValueTooLarge(limit)),
                    Outcome::Value(1)
                ]
            );
            assert_eq!(replies.values, b"oldv");
        }
    }
}
