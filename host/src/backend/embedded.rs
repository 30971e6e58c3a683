//! The embedded in-process store: the same capability without a server,
//! for demos and server-less runs. Entries live as long as the process.

use std::mem::size_of;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{BatchResult, BoxFuture, Storage};
use tenant_cache_memcached::types::{CasItem, Command, Error, Item, Limit, NewVersion, Outcome, Replies, ValueWithCas};

/// How the embedded store is sized.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// The largest item (value, key and memcached's per-item overhead), in
    /// bytes: memcached's default, so a program moves between the two
    /// without surprises.
    pub item_size_limit: u64,
    /// The bytes kept at most, entries' bookkeeping included; past that the
    /// least recently used entries go.
    pub capacity: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            item_size_limit: 1024 * 1024,
            capacity: 64 * 1024 * 1024,
        }
    }
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    /// Changes with every write, as memcached's CAS value.
    cas: u64,
    /// A reader was told to refresh it early (memcached's win token).
    refreshing: bool,
}

/// What an entry costs besides its key's and its value's bytes: their
/// headers, the LRU list's node (two links, in its own allocation, whose
/// header the allocator keeps) and the hash table's slot.
const ENTRY_OVERHEAD: usize = size_of::<String>() + size_of::<Entry>() + 5 * size_of::<usize>() + 1;

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

struct Items {
    entries: LruCache<String, Entry>,
    bytes: usize,
    /// The last CAS value handed out.
    last_cas: u64,
}

/// An in-process store with memcached's semantics for the capability's
/// commands.
pub(crate) struct Embedded {
    options: EmbeddedOptions,
    items: Mutex<Items>,
    batches: AtomicU64,
}

impl Items {
    /// The entry under `key`, unless it expired (then it is removed);
    /// marks it as used.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self
            .entries
            .peek(key)
            .is_some_and(|entry| entry.expires.is_some_and(|at| at <= now))
        {
            self.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.entries.pop(key) {
            Some(entry) => {
                self.bytes -= cost(key, &entry.value);
                true
            }
            None => false,
        }
    }

    fn store(&mut self, key: String, item: Item, now: Instant, capacity: usize) {
        let expires = item.ttl.map(|secs| now + Duration::from_secs(u64::from(secs)));
        self.put(key, item.value, expires, capacity);
    }

    /// Stores `value` under `key` with a fresh CAS value.
    fn put(&mut self, key: String, value: Vec<u8>, expires: Option<Instant>, capacity: usize) {
        self.remove(&key);
        self.bytes += cost(&key, &value);
        self.last_cas += 1;
        self.entries.put(
            key,
            Entry {
                value,
                expires,
                cas: self.last_cas,
                refreshing: false,
            },
        );
        // The least recently used go first, as in memcached's LRU; nothing
        // is copied to find them.
        while self.bytes > capacity {
            let Some((key, entry)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= cost(&key, &entry.value);
        }
    }
}

/// A value memcached's arithmetic takes: decimal digits (memcached pads
/// a number that shrank in place with spaces), at most 2^64 - 1.
fn number(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii_end();
    match !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        true => std::str::from_utf8(digits).ok()?.parse().ok(),
        false => None,
    }
}

impl Embedded {
    pub(crate) fn new(options: EmbeddedOptions) -> Embedded {
        Embedded {
            options,
            items: Mutex::new(Items {
                entries: LruCache::unbounded(),
                bytes: 0,
                last_cas: 0,
            }),
            batches: AtomicU64::new(0),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, Items> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every mutation is a single map operation), so poisoning is moot.
        self.items.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for Embedded {
    fn execute(&self, prefix: &str, _route: &[u8], commands: Vec<Command>, reply_bytes: u64) -> BatchResult {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut replies = Replies {
            outcomes: Vec::with_capacity(commands.len()),
            values: Vec::new(),
        };
        let key = |rel: &str| format!("{prefix}{rel}");
        let mut items = self.items();
        // Appends a value to the replies, within the reply-byte limit.
        let reply = |values: &mut Vec<u8>, value: &[u8]| -> Result<u32, Error> {
            if (values.len() + value.len()) as u64 > reply_bytes {
                return Err(Error::OverLimit(Limit::ReplyBytes(reply_bytes)));
            }
            values.extend_from_slice(value);
            Ok(value.len() as u32)
        };
        for command in commands {
            let outcome = match command {
                // The grant turns every new-version into the store of the
                // version it draws (`capability.rs`); were one to come this
                // far, it would only be read.
                Command::Get(rel) | Command::NewVersion(NewVersion { key: rel, .. }) => {
                    match items.live(&key(&rel), now) {
                        Some(entry) => Outcome::Value(reply(&mut replies.values, &entry.value)?),
                        None => Outcome::Miss,
                    }
                }
                Command::GetEarly(early) => match items.live(&key(&early.key), now) {
                    Some(entry) => {
                        let read = ValueWithCas {
                            len: reply(&mut replies.values, &entry.value)?,
                            cas: entry.cas,
                        };
                        // As memcached: the first reader within the window
                        // of the entry's expiry refreshes it, until it is
                        // stored again.
                        let window = Duration::from_secs(u64::from(early.window));
                        let due = entry
                            .expires
                            .is_some_and(|at| at.saturating_duration_since(now) < window);
                        match due && !entry.refreshing {
                            true => {
                                entry.refreshing = true;
                                Outcome::Refresh(read)
                            }
                            false => Outcome::ValueWithCas(read),
                        }
                    }
                    None => Outcome::Miss,
                },
                Command::Set(item) => {
                    items.store(key(&item.key), item, now, self.options.capacity);
                    Outcome::Done
                }
                Command::Add(item) => {
                    let key = key(&item.key);
                    if items.live(&key, now).is_some() {
                        Outcome::Exists
                    } else {
                        items.store(key, item, now, self.options.capacity);
                        Outcome::Done
                    }
                }
                Command::Delete(rel) => match items.remove(&key(&rel)) {
                    true => Outcome::Done,
                    false => Outcome::Miss,
                },
                Command::GetWithCas(rel) => match items.live(&key(&rel), now) {
                    Some(entry) => Outcome::ValueWithCas(ValueWithCas {
                        len: reply(&mut replies.values, &entry.value)?,
                        cas: entry.cas,
                    }),
                    None => Outcome::Miss,
                },
                Command::SetIfCas(CasItem { item, cas }) => {
                    let key = key(&item.key);
                    match items.live(&key, now).map(|entry| entry.cas) {
                        Some(current) if current == cas => {
                            items.store(key, item, now, self.options.capacity);
                            Outcome::Done
                        }
                        Some(_) => Outcome::Exists,
                        None => Outcome::Miss,
                    }
                }
                Command::Increment(delta) => {
                    let key = key(&delta.key);
                    match items.live(&key, now).map(|entry| (number(&entry.value), entry.expires)) {
                        Some((Some(number), expires)) => {
                            // As memcached: wrapping, the expiry kept.
                            let next = number.wrapping_add(delta.delta).to_string().into_bytes();
                            let len = reply(&mut replies.values, &next)?;
                            items.put(key, next, expires, self.options.capacity);
                            Outcome::Value(len)
                        }
                        Some((None, _)) => Outcome::NotANumber,
                        None => Outcome::Miss,
                    }
                }
            };
            replies.outcomes.push(outcome);
        }
        Ok(replies)
    }

    fn broadcast(&self, prefix: &str, commands: Vec<Command>) -> Result<(), Error> {
        let replies = self.execute(prefix, b"", commands, u64::MAX)?;
        for outcome in replies.outcomes {
            if let Outcome::Failed(error) = outcome {
                return Err(error);
            }
        }
        Ok(())
    }

    // An in-process store never waits: the async calls are the sync ones.
    fn execute_async<'a>(
        &'a self,
        prefix: &'a str,
        route: &'a [u8],
        commands: Vec<Command>,
        reply_bytes: u64,
    ) -> BoxFuture<'a, BatchResult> {
        Box::pin(std::future::ready(self.execute(prefix, route, commands, reply_bytes)))
    }

    fn broadcast_async<'a>(&'a self, prefix: &'a str, commands: Vec<Command>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(self.broadcast(prefix, commands)))
    }

    fn servers(&self) -> usize {
        1
    }

    fn item_size_limit(&self) -> u64 {
        self.options.item_size_limit
    }

    fn batches_sent(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        String::from("the embedded in-process store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, value: &[u8], ttl: Option<u32>) -> Item {
        Item {
            key: key.into(),
            value: value.to_vec(),
            ttl,
        }
    }

    /// What one command gave, as (outcome, values).
    fn one(store: &Embedded, command: Command) -> (Outcome, Vec<u8>) {
        let mut replies = store.execute("p:", b"", vec![command], u64::MAX).unwrap();
        assert_eq!(replies.outcomes.len(), 1);
        (replies.outcomes.pop().unwrap(), replies.values)
    }

    fn found(bytes: &[u8]) -> (Outcome, Vec<u8>) {
        (Outcome::Value(bytes.len() as u32), bytes.to_vec())
    }

    const MISS: (Outcome, Vec<u8>) = (Outcome::Miss, Vec::new());
    const DONE: (Outcome, Vec<u8>) = (Outcome::Done, Vec::new());

    fn store() -> Embedded {
        Embedded::new(EmbeddedOptions::default())
    }

    #[test]
    fn set_get_delete_round_trip() {
        let store = store();
        assert_eq!(one(&store, Command::Get("k".into())), MISS);
        assert_eq!(one(&store, Command::Set(item("k", b"v", None))), DONE);
        assert_eq!(one(&store, Command::Get("k".into())), found(b"v"));
        assert_eq!(one(&store, Command::Delete("k".into())), DONE);
        assert_eq!(one(&store, Command::Delete("k".into())), MISS);
        assert_eq!(one(&store, Command::Get("k".into())), MISS);
    }

    #[test]
    fn add_only_stores_new_keys() {
        let store = store();
        assert_eq!(one(&store, Command::Add(item("k", b"1", None))), DONE);
        assert_eq!(
            one(&store, Command::Add(item("k", b"2", None))),
            (Outcome::Exists, Vec::new())
        );
        assert_eq!(one(&store, Command::Get("k".into())), found(b"1"));
    }

    #[test]
    fn prefixes_keep_keys_apart() {
        let store = store();
        store
            .execute("a:", b"", vec![Command::Set(item("k", b"a", None))], u64::MAX)
            .unwrap();
        assert_eq!(one(&store, Command::Get("k".into())), MISS);
    }

    #[test]
    fn entries_expire() {
        let store = store();
        let now = Instant::now();
        let mut items = store.items();
        items.store("k".into(), item("k", b"v", Some(1)), now, usize::MAX);
        assert!(items.live("k", now).is_some());
        assert!(items.live("k", now + Duration::from_secs(1)).is_none());
        assert_eq!(items.bytes, 0);
    }

    #[test]
    fn memory_stays_bounded_and_recent_entries_survive() {
        let store = store();
        let value = vec![7u8; 512 * 1024];
        for n in 0..300 {
            assert_eq!(one(&store, Command::Set(item(&format!("k{n}"), &value, None))), DONE);
        }
        assert!(store.items().bytes <= store.options.capacity);
        assert_eq!(one(&store, Command::Get("k299".into())), found(&value));
        assert_eq!(one(&store, Command::Get("k0".into())), MISS);
    }

    #[test]
    fn many_tiny_entries_count_their_bookkeeping() {
        let capacity = 1024 * 1024;
        let store = Embedded::new(EmbeddedOptions {
            capacity,
            ..EmbeddedOptions::default()
        });
        for n in 0..100_000 {
            store
                .execute("", b"", vec![Command::Set(item(&n.to_string(), b"", None))], u64::MAX)
                .unwrap();
        }
        let items = store.items();
        assert!(items.bytes <= capacity);
        // With keys and values only counted, all 100 000 would be kept.
        assert!(
            items.entries.len() < capacity / ENTRY_OVERHEAD,
            "{}",
            items.entries.len()
        );
        assert_eq!(
            items.bytes,
            items
                .entries
                .iter()
                .map(|(key, entry)| cost(key, &entry.value))
                .sum::<usize>()
        );
    }

    #[test]
    fn a_batch_past_its_reply_limit_fails_whole() {
        let store = store();
        store
            .execute("", b"", vec![Command::Set(item("k", &[1; 100], None))], u64::MAX)
            .unwrap();
        let gets = vec![Command::Get("k".into()), Command::Get("k".into())];
        assert_eq!(
            store.execute("", b"", gets, 150).unwrap_err(),
            Error::OverLimit(Limit::ReplyBytes(150))
        );
    }

    #[test]
    fn broadcast_applies_everywhere() {
        let store = store();
        store
            .broadcast("p:", vec![Command::Set(item("a", b"1", None))])
            .unwrap();
        assert_eq!(one(&store, Command::Get("a".into())), found(b"1"));
    }

    #[test]
    fn a_compare_and_swap_stores_only_over_the_write_it_read() {
        let store = store();
        let cas = |value: &[u8], cas| {
            Command::SetIfCas(CasItem {
                item: item("k", value, None),
                cas,
            })
        };
        assert_eq!(one(&store, cas(b"x", 1)), MISS);
        one(&store, Command::Set(item("k", b"v", None)));
        let (Outcome::ValueWithCas(read), value) = one(&store, Command::GetWithCas("k".into())) else {
            panic!("no value with its CAS value");
        };
        assert_eq!((read.len, value), (1, b"v".to_vec()));
        assert_eq!(one(&store, cas(b"w", read.cas)), DONE);
        assert_eq!(one(&store, cas(b"x", read.cas)), (Outcome::Exists, Vec::new()));
        assert_eq!(one(&store, Command::Get("k".into())), found(b"w"));
    }

    #[test]
    fn increments_wrap_and_refuse_what_is_not_a_number() {
        let store = store();
        let increment =
            |delta| Command::Increment(tenant_cache_memcached::types::CounterDelta { key: "k".into(), delta });
        assert_eq!(one(&store, increment(1)), MISS);
        one(&store, Command::Set(item("k", b"18446744073709551614", None)));
        assert_eq!(one(&store, increment(1)), found(b"18446744073709551615"));
        assert_eq!(one(&store, increment(3)), found(b"2"));
        assert_eq!(one(&store, increment(u64::MAX)), found(b"1"), "-1 as two's complement");
        one(&store, Command::Set(item("k", b"1x", None)));
        assert_eq!(one(&store, increment(1)), (Outcome::NotANumber, Vec::new()));
    }

    #[test]
    fn one_reader_refreshes_an_entry_near_its_expiry_until_it_is_stored_again() {
        let store = store();
        let early = |window| {
            Command::GetEarly(tenant_cache_memcached::types::EarlyGet {
                key: "k".into(),
                window,
            })
        };
        // What a read finds, without the CAS value (checked apart).
        let read = |command| match one(&store, command) {
            (Outcome::ValueWithCas(read), value) => (Outcome::Value(read.len), value),
            (Outcome::Refresh(read), value) => (Outcome::Refresh(ValueWithCas { cas: 0, ..read }), value),
            other => other,
        };
        let refresh = |len| Outcome::Refresh(ValueWithCas { len, cas: 0 });
        one(&store, Command::Set(item("k", b"v", Some(30))));
        assert_eq!(read(early(10)), found(b"v"), "30 s left, a 10 s window");
        assert_eq!(read(early(60)), (refresh(1), b"v".to_vec()));
        assert_eq!(read(early(60)), found(b"v"), "one reader refreshes");
        one(&store, Command::Set(item("k", b"w", Some(30))));
        assert_eq!(read(early(60)), (refresh(1), b"w".to_vec()));
        let (Outcome::ValueWithCas(cas_read), _) = one(&store, Command::GetWithCas("k".into())) else {
            panic!("no item")
        };
        assert!(matches!(one(&store, early(60)).0, Outcome::ValueWithCas(read) if read.cas == cas_read.cas));
        one(&store, Command::Set(item("k", b"x", None)));
        assert_eq!(read(early(60)), found(b"x"), "no TTL, no refresh");
    }
}
