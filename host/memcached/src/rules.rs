//! The rules every batch passes before anything is sent, whoever grants
//! the capability (the wasmtime host, or the memcached provider
//! component): keys are printable, short enough and never the pool's;
//! a batch holds a bounded number of commands; stores fit the item size
//! limit; and the versions of `new-version` are drawn here, as they are
//! stored. The one owner of these rules; a bound grant adds its own
//! (`confinement`).

use crate::Rewrites;
use crate::membership::MAX_TAG;
use crate::types::{CasItem, Command, Error, Item, Limit, NewVersion, VersionWrite};

/// memcached's limit on a key, in bytes.
pub const MAX_MEMCACHED_KEY: usize = 250;

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
pub const ITEM_OVERHEAD: u64 = 64;

/// What one call to the capability may cost the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Commands in one batch, at most.
    pub commands: u32,
    /// Bytes of values the replies of one batch may bring, at most: the
    /// host gathers them before the component gets them. The wasmtime
    /// host's `Runtime` lowers it to the component's memory limit.
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

/// The prefix every key of application `app` carries in memcached:
/// `tc:<app>:`, where `<app>` is the name percent-encoded like the guest's
/// parts, or `#` + 128 bits of its SHA-256 when that is too long. Any name
/// is accepted; two applications never share a prefix.
pub fn app_prefix(app: &str) -> String {
    format!("tc:{}:", app_part(app))
}

/// The application name as it appears in keys.
fn app_part(app: &str) -> String {
    let mut part = String::new();
    if tenant_cache_layout::parts::push_escaped(&mut part, app, MAX_APP_PART) {
        return part;
    }
    format!("#{}", crate::digest::short_digest(app.as_bytes()))
}

/// An item size limit as an operator writes it (memcached's `-I`): bytes,
/// or with `k` or `m`, at least 1k (a smaller limit leaves no room for a
/// key and the header every value carries).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix(['k', 'm']) {
        Some(digits) if lower.ends_with('k') => (digits, 1024),
        Some(digits) => (digits, 1024 * 1024),
        None => (lower.as_str(), 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .filter(|&bytes| bytes >= 1024)
        .ok_or_else(|| format!("{text:?} is not a size of at least 1k (bytes, or with k or m)"))
}

/// Refuses a key that is not printable ASCII, is too long, or starts with
/// `~` (which the pool uses to tag keys): the key is guest controlled, and
/// a space or CR/LF would otherwise end up on memcached's command line.
pub fn check_key(key: &str) -> Result<(), Error> {
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

/// The rules of one grant: its application's prefix, its limits on a call
/// and its storage's item size limit.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// The application's key prefix ([`app_prefix`]).
    pub prefix: &'a str,
    /// The limits on one call.
    pub limits: BatchLimits,
    /// The largest item the storage accepts (value, key and memcached's
    /// own overhead), in bytes.
    pub item_size_limit: u64,
}

impl Rules<'_> {
    /// The item size limit a value of `len` bytes breaks whatever its key,
    /// if it breaks it.
    pub fn refuses_value(&self, len: usize) -> Option<u64> {
        let limit = self.item_size_limit;
        u64::try_from(len).map_or(true, |len| len > limit).then_some(limit)
    }

    /// The item size limit `item` breaks, if it breaks it: its value, its
    /// key in memcached (prefix and the longest tag included) and
    /// memcached's own overhead must fit.
    pub fn refuses_item(&self, item: &Item) -> Option<u64> {
        let limit = self.item_size_limit;
        let key = (self.prefix.len() + MAX_TAG + item.key.len()) as u64;
        let size = u64::try_from(item.value.len()).unwrap_or(u64::MAX);
        (size.saturating_add(key + ITEM_OVERHEAD) > limit).then_some(limit)
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
    pub fn check_commands(&self, commands: &mut Vec<Command>) -> Result<Rewrites, Error> {
        if commands.len() > self.limits.commands as usize {
            return Err(Error::OverLimit(Limit::CommandsPerBatch(self.limits.commands)));
        }
        let mut rewrites = Rewrites::default();
        for (index, command) in commands.iter_mut().enumerate() {
            match command {
                Command::Get(key) | Command::Delete(key) | Command::GetWithCas(key) => check_key(key)?,
                Command::GetEarly(early) => {
                    check_key(&early.key)?;
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
                Command::Increment(delta) => check_key(&delta.key)?,
                // A store that cannot fit removes its key, as memcached
                // does with one it refuses.
                Command::Set(item) => {
                    check_key(&item.key)?;
                    if let Some(limit) = self.refuses_item(item) {
                        rewrites.refused.push((index, limit));
                        let key = std::mem::take(&mut item.key);
                        *command = Command::Delete(key);
                    }
                }
                // A conditional one is not sent.
                Command::Add(item) | Command::SetIfCas(CasItem { item, .. }) => {
                    check_key(&item.key)?;
                    if let Some(limit) = self.refuses_item(item) {
                        rewrites.skipped.push((index, limit));
                    }
                }
                Command::NewVersion(NewVersion { key, write }) => {
                    check_key(key)?;
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

    /// [`check_commands`](Self::check_commands) for a broadcast, where no
    /// store may be too large. Returns the versions drawn for its
    /// `new-version` commands.
    pub fn check_broadcast(&self, commands: &mut Vec<Command>) -> Result<Vec<u64>, Error> {
        let rewrites = self.check_commands(commands)?;
        match rewrites.refused.first().or(rewrites.skipped.first()) {
            Some(&(_, limit)) => Err(Error::ValueTooLarge(limit)),
            None => Ok(rewrites.minted.into_iter().map(|(_, version)| version).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, value: Vec<u8>) -> Item {
        Item {
            key: key.into(),
            value,
            ttl: None,
        }
    }

    fn rules(prefix: &str) -> Rules<'_> {
        Rules {
            prefix,
            limits: BatchLimits::default(),
            item_size_limit: 1024 * 1024,
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
    fn items_fit_with_their_key_and_memcached_overhead() {
        let prefix = app_prefix("shop");
        let rules = rules(&prefix);
        let limit = rules.item_size_limit;
        let room = limit - (prefix.len() + MAX_TAG + 1) as u64 - ITEM_OVERHEAD;
        assert_eq!(rules.refuses_item(&item("k", vec![0; room as usize])), None);
        assert_eq!(rules.refuses_item(&item("k", vec![0; room as usize + 1])), Some(limit));
        assert_eq!(rules.refuses_value(limit as usize), None);
        assert_eq!(rules.refuses_value(limit as usize + 1), Some(limit));
    }

    #[test]
    fn batches_past_the_command_limit_are_refused_whole() {
        let prefix = app_prefix("shop");
        let rules = Rules {
            limits: BatchLimits {
                commands: 3,
                ..BatchLimits::default()
            },
            ..rules(&prefix)
        };
        let gets = |n: usize| (0..n).map(|n| Command::Get(format!("k{n}"))).collect::<Vec<_>>();
        assert!(rules.check_commands(&mut gets(3)).is_ok());
        assert_eq!(
            rules.check_commands(&mut gets(4)).err(),
            Some(Error::OverLimit(Limit::CommandsPerBatch(3)))
        );
    }

    #[test]
    fn sizes_are_bytes_or_k_or_m_and_at_least_1k() {
        assert_eq!(parse_size("1m"), Ok(1024 * 1024));
        assert_eq!(parse_size(" 64K "), Ok(64 * 1024));
        assert_eq!(parse_size("1024"), Ok(1024));
        for bad in ["0", "1023", "16", "", "k", "1g", "-1k", "99999999999999999m"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_validated() {
        let too_long = "k".repeat(MAX_RELATIVE_KEY + 1);
        for bad in ["", "a b", "a\r\nflush_all", "a\0", "é", "~tag:x", too_long.as_str()] {
            assert!(matches!(check_key(bad), Err(Error::InvalidKey(_))), "{bad:?}");
        }
        assert!(check_key(&"k".repeat(MAX_RELATIVE_KEY)).is_ok());
        assert!(check_key("a~b").is_ok());
        // The longest prefix, the longest tag and the longest key fit.
        assert!(app_prefix(&"é".repeat(100)).len() + MAX_TAG + MAX_RELATIVE_KEY <= MAX_MEMCACHED_KEY);
    }
}
