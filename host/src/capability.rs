//! The memcached capability as the component sees it: keys are scoped to
//! the application the host granted (and, on a bound grant, to one tenant:
//! `confinement`), every command is checked against the grant's rules
//! before anything is sent, and there is no flush.

mod linker;
mod rewrites;

use std::sync::Arc;

use crate::backend::Backend;
use crate::backend::membership::MAX_TAG;
use crate::bindings::capability::{CasItem, Command, Error, Host, Item, Limit, NewVersion, Replies, VersionWrite};
use crate::confinement::Confinement;
pub use linker::{add_to_linker, add_to_linker_async};
use rewrites::Rewrites;

/// memcached's limit on a key, in bytes.
const MAX_MEMCACHED_KEY: usize = 250;

/// The longest encoded application name inside the prefix.
const MAX_APP_PART: usize = 36;

/// The longest relative key a guest may send: what is left of 250 bytes
/// after the longest prefix (`tc:` + app part + `:`) and the longest tag
/// the pool puts after it.
pub const MAX_RELATIVE_KEY: usize = MAX_MEMCACHED_KEY - (3 + MAX_APP_PART + 1) - MAX_TAG;

/// What memcached stores with every item besides its key and value: its
/// item header, CAS value, the key's terminator and the value's CRLF.
/// Measured on memcached 1.6.18 (64-bit): 59 bytes; a few more are counted
/// so other builds never refuse what the grant lets through.
const ITEM_OVERHEAD: u64 = 64;

/// What one call to the capability may cost the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Commands in one batch, at most.
    pub commands: u32,
    /// Bytes of values the replies of one batch may bring, at most: the
    /// host gathers them before the component gets them. [`Runtime`]
    /// lowers it to the component's memory limit.
    ///
    /// [`Runtime`]: crate::Runtime
    pub reply_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            commands: 100_000,
            reply_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The memcached capability granted to a component for one application,
/// and the one owner of the rules every command must pass.
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
    /// Batches sent, one per server reached (`tenant_cache_round_trips_total`).
    round_trips: metrics::Counter,
}

/// The interface the grant implements, as components import it.
const INTERFACE: &str = "tenant-cache:cache/memcached@0.7.0";

impl Grant {
    /// Grants access to `backend` for the application `app`, with the
    /// default [`BatchLimits`]. Any name is accepted: it is encoded, never
    /// sent as it is.
    pub fn new(backend: Backend, app: &str) -> Grant {
        let prefix: Arc<str> = format!("tc:{}:", app_part(app)).into();
        Grant {
            backend,
            app: app.into(),
            memo_scope: prefix.clone(),
            prefix,
            limits: BatchLimits::default(),
            tenant_labels: false,
            bound: None,
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

    /// The item size limit a value of `len` bytes breaks whatever its key,
    /// if it breaks it: [`TenantCache`](crate::TenantCache) asks before it
    /// even copies a value into the component.
    pub(crate) fn refuses_value(&self, len: usize) -> Option<u64> {
        let limit = self.backend.item_size_limit();
        u64::try_from(len).map_or(true, |len| len > limit).then_some(limit)
    }

    /// The item size limit `item` breaks, if it breaks it: its value, its
    /// key in memcached (prefix and the longest tag included) and
    /// memcached's own overhead must fit.
    fn refuses_item(&self, item: &Item) -> Option<u64> {
        let limit = self.backend.item_size_limit();
        let key = (self.prefix.len() + MAX_TAG + item.key.len()) as u64;
        let size = u64::try_from(item.value.len()).unwrap_or(u64::MAX);
        (size.saturating_add(key + ITEM_OVERHEAD) > limit).then_some(limit)
    }

    /// Refuses a key that is not printable ASCII, is too long, or starts
    /// with `~` (which the pool uses to tag keys): the key is guest
    /// controlled, and a space or CR/LF would otherwise end up on
    /// memcached's command line.
    fn check_key(key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > MAX_RELATIVE_KEY {
            return Err(Error::InvalidKey(format!(
                "a key must be 1 to {MAX_RELATIVE_KEY} bytes, not {}",
                key.len()
            )));
        }
        if let Some(byte) = key.bytes().find(|byte| !byte.is_ascii_graphic()) {
            return Err(Error::InvalidKey(format!(
                "a key may only hold bytes '!'..'~', not {byte:#04x}"
            )));
        }
        if key.starts_with('~') {
            return Err(Error::InvalidKey(String::from("a key may not start with '~'")));
        }
        Ok(())
    }

    /// Checks a batch for `route` against every rule of the grant (its
    /// binding first), and rewrites what is not sent as it is (see
    /// [`check_commands`](Self::check_commands)).
    fn admit(&mut self, route: &str, commands: &mut Vec<Command>) -> Result<Rewrites, Error> {
        let admitted = match &self.bound {
            Some(bound) => bound.admit(route, commands),
            None => Ok(()),
        };
        self.observe_refusal(admitted.and_then(|()| self.check_commands(commands)))
    }

    /// [`admit`](Self::admit) for a broadcast: no store may be too large.
    /// Returns the versions drawn for its `new-version` commands.
    fn admit_broadcast(&mut self, commands: &mut Vec<Command>) -> Result<Vec<u64>, Error> {
        let admitted = match &self.bound {
            Some(bound) => bound.admit_broadcast(),
            None => Ok(()),
        };
        let rewrites = self.observe_refusal(admitted.and_then(|()| self.check_commands(commands)))?;
        match rewrites.refused.first().or(rewrites.skipped.first()) {
            Some(&(_, limit)) => Err(Error::ValueTooLarge(limit)),
            None => Ok(rewrites.minted.into_iter().map(|(_, version)| version).collect()),
        }
    }

    /// Counts and logs a refused batch.
    fn observe_refusal<T>(&self, admitted: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &admitted {
            let reason = match error {
                Error::OverLimit(_) => "over_limit",
                Error::Denied(_) => "denied",
                _ => "invalid_key",
            };
            crate::observe::refused(&self.app, reason, &crate::backend::memcached::protocol::describe(error));
        }
        admitted
    }

    /// Checks every command's key and arguments, and rewrites three kinds
    /// of command before they are sent:
    /// - a `set` whose item cannot fit becomes a `delete` of its key (as
    ///   memcached itself drops the old item when a store is too large, so
    ///   a failed write never leaves a stale value behind), and its reply
    ///   will be `value-too-large`;
    /// - an `add` or `set-if-cas` whose item cannot fit is not sent at all
    ///   (its reply will be `value-too-large`): a store that was to happen
    ///   only over what was read must not become a removal of whatever is
    ///   there now;
    /// - a `new-version` becomes the store of a version drawn here and now
    ///   (the same one on every server of a broadcast), and its reply
    ///   `minted` with it: no component knows a version before it is
    ///   stored.
    fn check_commands(&self, commands: &mut Vec<Command>) -> Result<Rewrites, Error> {
        if commands.len() > self.limits.commands as usize {
            return Err(Error::OverLimit(Limit::CommandsPerBatch(self.limits.commands)));
        }
        let mut rewrites = Rewrites::default();
        for (index, command) in commands.iter_mut().enumerate() {
            match command {
                Command::Get(key) | Command::Delete(key) | Command::GetWithCas(key) => Self::check_key(key)?,
                Command::GetEarly(early) => {
                    Self::check_key(&early.key)?;
                    // memcached reads the window as a signed 32-bit number:
                    // a larger one would silently refresh nothing.
                    if early.window > i32::MAX as u32 {
                        return Err(Error::InvalidKey(format!(
                            "a get-early window is at most {} seconds, not {}",
                            i32::MAX,
                            early.window
                        )));
                    }
                }
                Command::Increment(delta) => Self::check_key(&delta.key)?,
                // A store that cannot fit removes its key, as memcached
                // does with one it refuses.
                Command::Set(item) => {
                    Self::check_key(&item.key)?;
                    if let Some(limit) = self.refuses_item(item) {
                        rewrites.refused.push((index, limit));
                        let key = std::mem::take(&mut item.key);
                        *command = Command::Delete(key);
                    }
                }
                // A conditional one is not sent.
                Command::Add(item) | Command::SetIfCas(CasItem { item, .. }) => {
                    Self::check_key(&item.key)?;
                    if let Some(limit) = self.refuses_item(item) {
                        rewrites.skipped.push((index, limit));
                    }
                }
                Command::NewVersion(NewVersion { key, write }) => {
                    Self::check_key(key)?;
                    let version: u64 = rand::random();
                    let item = Item {
                        key: std::mem::take(key),
                        value: tenant_cache_layout::version::record_value(version),
                        ttl: None,
                    };
                    *command = match *write {
                        VersionWrite::Overwrite => Command::Set(item),
                        VersionWrite::Create => Command::Add(item),
                        VersionWrite::Replace(cas) => Command::SetIfCas(CasItem { item, cas }),
                    };
                    rewrites.minted.push((index, version));
                }
            }
        }
        for &(index, _) in rewrites.skipped.iter().rev() {
            commands.remove(index);
        }
        Ok(rewrites)
    }

    /// The code that authenticates `message` for `route` (the `mac`
    /// function): HMAC-SHA-256 under the backend's token key, over the
    /// application's prefix, the route and the message, cut to 16 bytes.
    fn code(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, Error> {
        use hmac::Mac;
        if let Some(bound) = &self.bound {
            bound.admit_route(route)?;
        }
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.backend.token_key())
            .map_err(|_| Error::Protocol(String::from("the token key has a length HMAC refuses")))?;
        for part in [self.prefix.as_bytes(), b"\n", route.as_bytes(), b"\n", message] {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes()[..16].to_vec())
    }
}

/// The application name as it appears in keys: percent-encoded like the
/// guest's parts, or `#` + 128 bits of its SHA-256 when that is too long.
fn app_part(app: &str) -> String {
    let mut part = String::new();
    if tenant_cache_layout::parts::push_escaped(&mut part, app, MAX_APP_PART) {
        return part;
    }
    format!("#{}", crate::digest::short_digest(app.as_bytes()))
}

/// The capability's calls, once the grant admitted them; the synchronous
/// `Host` and the async functions below only differ in how they wait.
impl Grant {
    fn run(&self, route: &str, commands: Vec<Command>, rewrites: Rewrites) -> Result<Replies, Error> {
        self.round_trips.increment(1);
        // The route only picks a server; it is never sent to memcached.
        let storage = self.backend.storage();
        let mut replies = storage.execute(&self.prefix, route.as_bytes(), commands, self.limits.reply_bytes)?;
        rewrites.apply(&mut replies);
        Ok(replies)
    }

    async fn run_async(&self, route: &str, commands: Vec<Command>, rewrites: Rewrites) -> Result<Replies, Error> {
        self.round_trips.increment(1);
        let storage = self.backend.storage();
        let mut replies = storage
            .execute_async(&self.prefix, route.as_bytes(), commands, self.limits.reply_bytes)
            .await?;
        rewrites.apply(&mut replies);
        Ok(replies)
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

impl Host for Grant {
    fn execute(&mut self, route: String, mut commands: Vec<Command>) -> Result<Replies, Error> {
        let rewrites = self.admit(&route, &mut commands)?;
        self.run(&route, commands, rewrites)
    }

    fn broadcast(&mut self, mut commands: Vec<Command>) -> Result<Vec<u64>, Error> {
        let minted = self.admit_broadcast(&mut commands)?;
        self.run_broadcast(commands).map(|()| minted)
    }

    fn random_u64(&mut self) -> u64 {
        rand::random()
    }

    fn mac(&mut self, route: String, message: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.code(&route, &message)
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
    use crate::bindings::capability::Outcome;

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
    fn app_names_are_encoded_injectively() {
        assert_eq!(app_part("default"), "default");
        assert_eq!(app_part(""), "");
        assert_eq!(app_part("a b:c"), "a%20b%3Ac");
        assert_ne!(app_part("a:b"), app_part("a%3Ab"));
        let long = app_part(&"x".repeat(1000));
        assert!(long.starts_with('#') && long.len() == 33 && long.len() <= MAX_APP_PART);
        assert_ne!(long, app_part(&"x".repeat(1001)));
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

    #[test]
    fn items_fit_with_their_key_and_memcached_overhead() {
        let grant = Grant::new(Backend::embedded(), "shop");
        let limit = grant.backend().item_size_limit();
        let room = limit - (grant.prefix().len() + MAX_TAG + 1) as u64 - ITEM_OVERHEAD;
        assert_eq!(grant.refuses_item(&item("k", vec![0; room as usize])), None);
        assert_eq!(grant.refuses_item(&item("k", vec![0; room as usize + 1])), Some(limit));
        assert_eq!(grant.refuses_value(limit as usize), None);
        assert_eq!(grant.refuses_value(limit as usize + 1), Some(limit));
    }

    #[test]
    fn batches_past_the_command_limit_are_refused_whole() {
        let mut grant = Grant::new(Backend::embedded(), "shop").with_limits(BatchLimits {
            commands: 3,
            ..BatchLimits::default()
        });
        let gets = |n: usize| (0..n).map(|n| Command::Get(format!("k{n}"))).collect();
        assert!(grant.execute("t".into(), gets(3)).is_ok());
        assert_eq!(
            grant.execute("t".into(), gets(4)),
            Err(Error::OverLimit(Limit::CommandsPerBatch(3)))
        );
    }

    #[test]
    fn keys_are_validated() {
        let too_long = "k".repeat(MAX_RELATIVE_KEY + 1);
        for bad in ["", "a b", "a\r\nflush_all", "a\0", "é", "~tag:x", too_long.as_str()] {
            assert!(matches!(Grant::check_key(bad), Err(Error::InvalidKey(_))), "{bad:?}");
        }
        assert!(Grant::check_key(&"k".repeat(MAX_RELATIVE_KEY)).is_ok());
        assert!(Grant::check_key("a~b").is_ok());
        // The longest prefix, the longest tag and the longest key fit.
        let longest = Grant::new(Backend::embedded(), &"é".repeat(100));
        assert!(longest.prefix().len() + MAX_TAG + MAX_RELATIVE_KEY <= MAX_MEMCACHED_KEY);
    }
}
