//! The memcached capability as the component sees it: keys are scoped to
//! the application the host granted, every command is checked against the
//! grant's rules before anything is sent, and there is no flush.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::backend::Backend;
use crate::bindings::capability::{Command, Error, Host, Item, Outcome, Replies};

/// memcached's limit on a key, in bytes.
const MAX_MEMCACHED_KEY: usize = 250;

/// The longest encoded application name inside the prefix.
const MAX_APP_PART: usize = 50;

/// The longest relative key a guest may send: what is left of 250 bytes
/// after the longest prefix (`tc:` + app part + `:`).
pub const MAX_RELATIVE_KEY: usize = MAX_MEMCACHED_KEY - (3 + MAX_APP_PART + 1);

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
    prefix: Arc<str>,
}

impl Grant {
    /// Grants access to `backend` for the application `app`. Any name is
    /// accepted: it is encoded, never sent as it is.
    pub fn new(backend: Backend, app: &str) -> Grant {
        Grant {
            backend,
            prefix: format!("tc:{}:", app_part(app)).into(),
        }
    }

    /// The prefix every key of this application carries in memcached.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The backend this grant stores into.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The item size limit a value of `len` bytes breaks, if it breaks it:
    /// the rule for every value the component stores, also applied by
    /// [`TenantCache`](crate::TenantCache) before a value is even copied
    /// into the component.
    pub(crate) fn refuses_value(&self, len: usize) -> Option<u64> {
        let limit = self.backend.item_size_limit();
        u64::try_from(len).map_or(true, |len| len > limit).then_some(limit)
    }

    /// The full memcached key for a guest's relative key, refused when it
    /// is not printable ASCII or too long: the key is guest-controlled, and
    /// a space or CR/LF would otherwise end up on memcached's command line.
    fn scope(&self, key: String) -> Result<String, Error> {
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
        let mut scoped = String::with_capacity(self.prefix.len() + key.len());
        scoped.push_str(&self.prefix);
        scoped.push_str(&key);
        Ok(scoped)
    }

    /// Scopes one command. A store whose value cannot fit the item size
    /// limit is not sent as such: a `set` becomes a `delete` of its key (as
    /// memcached itself drops the old item when a set is too large, so a
    /// failed write never leaves a stale value behind) and an `add` is
    /// dropped; the second part is then that command's failure.
    fn scope_command(&self, command: Command) -> Result<(Option<Command>, Option<Error>), Error> {
        let too_large = |item: &Item| self.refuses_value(item.value.len());
        Ok(match command {
            Command::Get(key) => (Some(Command::Get(self.scope(key)?)), None),
            Command::Delete(key) => (Some(Command::Delete(self.scope(key)?)), None),
            Command::Set(item) if let Some(limit) = too_large(&item) => (
                Some(Command::Delete(self.scope(item.key)?)),
                Some(Error::ValueTooLarge(limit)),
            ),
            Command::Add(item) if let Some(limit) = too_large(&item) => {
                self.scope(item.key)?;
                (None, Some(Error::ValueTooLarge(limit)))
            }
            Command::Set(item) => (
                Some(Command::Set(Item {
                    key: self.scope(item.key)?,
                    ..item
                })),
                None,
            ),
            Command::Add(item) => (
                Some(Command::Add(Item {
                    key: self.scope(item.key)?,
                    ..item
                })),
                None,
            ),
        })
    }
}

/// Puts the failures of commands that were not sent as such into a
/// store's replies: `failed` replace the replies at their positions (a
/// refused `set` was sent as a `delete`, whose reply carries no value), and
/// `refused` (sorted by index; a refused `add` sends nothing) take their
/// places among the outcomes, in command order.
fn merge(replies: &mut Replies, failed: Vec<(usize, Error)>, refused: Vec<(usize, Error)>) {
    for (position, error) in failed {
        if let Some(outcome) = replies.outcomes.get_mut(position)
            && !matches!(outcome, Outcome::Value(_))
        {
            *outcome = Outcome::Failed(error);
        }
    }
    for (index, error) in refused {
        let index = index.min(replies.outcomes.len());
        replies.outcomes.insert(index, Outcome::Failed(error));
    }
}

/// The application name as it appears in keys: percent-encoded like the
/// guest's parts, or `#` + 128 bits of its SHA-256 when that is too long.
fn app_part(app: &str) -> String {
    let mut part = String::new();
    if tenant_cache_key_parts::push_escaped(&mut part, app, MAX_APP_PART) {
        return part;
    }
    format!("#{}", crate::digest::short_digest(app.as_bytes()))
}

impl Host for Grant {
    fn execute(&mut self, route: String, commands: Vec<Command>) -> Result<Replies, Error> {
        let mut sent = Vec::with_capacity(commands.len());
        // Commands not sent as such: by position among the sent ones (a
        // refused `set` still sends its `delete`), or by index (a refused
        // `add` sends nothing).
        let mut failed = Vec::new();
        let mut refused = Vec::new();
        for (index, command) in commands.into_iter().enumerate() {
            match self.scope_command(command)? {
                (Some(command), None) => sent.push(command),
                (Some(command), Some(error)) => {
                    failed.push((sent.len(), error));
                    sent.push(command);
                }
                (None, Some(error)) => refused.push((index, error)),
                (None, None) => {}
            }
        }
        self.backend.count_batches(1);
        // The route only picks a server; it is never sent to memcached.
        let mut replies = self.backend.storage().execute(route.as_bytes(), sent)?;
        if !(failed.is_empty() && refused.is_empty()) {
            merge(&mut replies, failed, refused);
        }
        Ok(replies)
    }

    fn broadcast(&mut self, commands: Vec<Command>) -> Result<(), Error> {
        let mut scoped = Vec::with_capacity(commands.len());
        for command in commands {
            match self.scope_command(command)? {
                (Some(command), None) => scoped.push(command),
                (_, Some(refused)) => return Err(refused),
                (None, None) => {}
            }
        }
        self.backend.count_batches(self.backend.storage().servers() as u64);
        self.backend.storage().broadcast(scoped)
    }

    fn random_u64(&mut self) -> u64 {
        rand::random()
    }
}

struct HasGrant;

impl HasData for HasGrant {
    type Data<'a> = &'a mut Grant;
}

/// Adds the memcached capability to `linker`: a component instantiated
/// with it reaches the backend of the [`Grant`] that `get` returns from the
/// store's data, and nothing else.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut Grant) -> wasmtime::Result<()> {
    crate::bindings::capability::add_to_linker::<T, HasGrant>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_encoded_injectively() {
        assert_eq!(app_part("default"), "default");
        assert_eq!(app_part(""), "");
        assert_eq!(app_part("a b:c"), "a%20b%3Ac");
        assert_ne!(app_part("a:b"), app_part("a%3Ab"));
        let long = app_part(&"x".repeat(1000));
        assert!(long.starts_with('#') && long.len() == 33);
        assert_ne!(long, app_part(&"x".repeat(1001)));
    }

    #[test]
    fn refusals_take_their_places_among_the_replies() {
        let mut replies = Replies {
            outcomes: vec![
                Outcome::Value(2),
                Outcome::Miss,
                Outcome::Failed(Error::Protocol("x".into())),
                Outcome::Value(3),
                Outcome::Done,
            ],
            values: b"abcde".to_vec(),
        };
        merge(
            &mut replies,
            vec![(4, Error::ValueTooLarge(4))],
            vec![
                (0, Error::ValueTooLarge(1)),
                (3, Error::ValueTooLarge(2)),
                (7, Error::ValueTooLarge(3)),
            ],
        );
        assert_eq!(
            replies.outcomes,
            vec![
                Outcome::Failed(Error::ValueTooLarge(1)),
                Outcome::Value(2),
                Outcome::Miss,
                Outcome::Failed(Error::ValueTooLarge(2)),
                Outcome::Failed(Error::Protocol("x".into())),
                Outcome::Value(3),
                Outcome::Failed(Error::ValueTooLarge(4)),
                Outcome::Failed(Error::ValueTooLarge(3)),
            ]
        );
        assert_eq!(replies.values, b"abcde");
    }

    #[test]
    fn an_oversized_set_removes_its_key_and_fails_alone() {
        let mut grant = Grant::new(Backend::embedded(), "shop");
        let limit = grant.backend().item_size_limit();
        let item = |value: Vec<u8>| Item {
            key: "k".into(),
            value,
            ttl: None,
        };
        grant
            .execute("t".into(), vec![Command::Set(item(b"old".to_vec()))])
            .unwrap();
        let replies = grant
            .execute(
                "t".into(),
                vec![
                    Command::Set(item(vec![0; limit as usize + 1])),
                    Command::Add(item(vec![0; limit as usize + 1])),
                    Command::Get("k".into()),
                ],
            )
            .unwrap();
        assert_eq!(
            replies.outcomes,
            [
                Outcome::Failed(Error::ValueTooLarge(limit)),
                Outcome::Failed(Error::ValueTooLarge(limit)),
                Outcome::Miss
            ]
        );
        assert_eq!(grant.refuses_value(limit as usize), None);
        assert_eq!(grant.refuses_value(limit as usize + 1), Some(limit));
    }

    #[test]
    fn keys_are_validated_and_prefixed() {
        let grant = Grant::new(Backend::embedded(), "shop");
        assert_eq!(grant.scope("n:Lisboa".into()), Ok("tc:shop:n:Lisboa".into()));
        for bad in ["", "a b", "a\r\nflush_all", "a\0", "é"] {
            assert!(matches!(grant.scope(bad.into()), Err(Error::InvalidKey(_))), "{bad:?}");
        }
        assert!(grant.scope("k".repeat(MAX_RELATIVE_KEY)).is_ok());
        assert!(grant.scope("k".repeat(MAX_RELATIVE_KEY + 1)).is_err());
        let longest = Grant::new(Backend::embedded(), &"é".repeat(100));
        assert!(longest.scope("k".repeat(MAX_RELATIVE_KEY)).unwrap().len() <= MAX_MEMCACHED_KEY);
    }
}
