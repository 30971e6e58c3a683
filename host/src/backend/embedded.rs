//! The embedded in-process store: the same capability without a server,
//! for demos and server-less runs. Entries live as long as the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{BatchResult, Storage, push_value};
use crate::bindings::capability::{Command, Error, Item, Outcome, Replies};

/// memcached's default item size limit (`-I 1m`).
const ITEM_SIZE_LIMIT: u64 = 1024 * 1024;

/// Bytes kept at most; past that, entries are dropped as an LRU would
/// (expired ones first, then the least recently used).
const CAPACITY: usize = 64 * 1024 * 1024;

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    used: u64,
}

#[derive(Default)]
struct Items {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

/// An in-process store with memcached's semantics for the capability's
/// commands.
#[derive(Default)]
pub(crate) struct Embedded {
    items: Mutex<Items>,
}

impl Items {
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires.is_some_and(|at| at <= now))
        {
            self.remove(key);
        }
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(key)?;
        entry.used = clock;
        Some(entry)
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.bytes -= key.len() + entry.value.len();
                true
            }
            None => false,
        }
    }

    fn store(&mut self, item: Item, now: Instant) {
        self.remove(&item.key);
        self.clock += 1;
        self.bytes += item.key.len() + item.value.len();
        let expires = item.ttl.map(|secs| now + Duration::from_secs(u64::from(secs)));
        self.entries.insert(
            item.key,
            Entry {
                value: item.value,
                expires,
                used: self.clock,
            },
        );
        if self.bytes > CAPACITY {
            self.evict(now);
        }
    }

    fn evict(&mut self, now: Instant) {
        self.entries.retain(|_, entry| entry.expires.is_none_or(|at| at > now));
        self.bytes = self
            .entries
            .iter()
            .map(|(key, entry)| key.len() + entry.value.len())
            .sum();
        let mut by_use: Vec<(u64, String)> = self
            .entries
            .iter()
            .map(|(key, entry)| (entry.used, key.clone()))
            .collect();
        by_use.sort_unstable();
        for (_, key) in by_use {
            if self.bytes <= CAPACITY * 3 / 4 {
                break;
            }
            self.remove(&key);
        }
    }

    /// Runs one command; its outcome goes to `replies`.
    fn run(&mut self, command: Command, now: Instant, replies: &mut Replies) {
        let outcome = match command {
            Command::Get(key) => match self.live(&key, now) {
                Some(entry) => {
                    push_value(replies, &entry.value);
                    return;
                }
                None => Outcome::Miss,
            },
            Command::Set(item) => {
                self.store(item, now);
                Outcome::Done
            }
            Command::Add(item) => {
                if self.live(&item.key, now).is_some() {
                    Outcome::Exists
                } else {
                    self.store(item, now);
                    Outcome::Done
                }
            }
            Command::Delete(key) => match self.remove(&key) {
                true => Outcome::Done,
                false => Outcome::Miss,
            },
        };
        replies.outcomes.push(outcome);
    }
}

impl Embedded {
    fn items(&self) -> std::sync::MutexGuard<'_, Items> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every mutation is a single map operation), so poisoning is moot.
        self.items.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for Embedded {
    fn execute(&self, _route: &[u8], commands: Vec<Command>) -> BatchResult {
        let now = Instant::now();
        let mut replies = Replies {
            outcomes: Vec::with_capacity(commands.len()),
            values: Vec::new(),
        };
        let mut items = self.items();
        for command in commands {
            items.run(command, now, &mut replies);
        }
        Ok(replies)
    }

    fn broadcast(&self, commands: Vec<Command>) -> Result<(), Error> {
        let replies = self.execute(b"", commands)?;
        for outcome in replies.outcomes {
            if let Outcome::Failed(error) = outcome {
                return Err(error);
            }
        }
        Ok(())
    }

    fn servers(&self) -> usize {
        1
    }

    fn item_size_limit(&self) -> u64 {
        ITEM_SIZE_LIMIT
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
        let mut replies = store.execute(b"", vec![command]).unwrap();
        assert_eq!(replies.outcomes.len(), 1);
        (replies.outcomes.pop().unwrap(), replies.values)
    }

    fn found(bytes: &[u8]) -> (Outcome, Vec<u8>) {
        (Outcome::Value(bytes.len() as u32), bytes.to_vec())
    }

    const MISS: (Outcome, Vec<u8>) = (Outcome::Miss, Vec::new());
    const DONE: (Outcome, Vec<u8>) = (Outcome::Done, Vec::new());

    #[test]
    fn set_get_delete_round_trip() {
        let store = Embedded::default();
        assert_eq!(one(&store, Command::Get("k".into())), MISS);
        assert_eq!(one(&store, Command::Set(item("k", b"v", None))), DONE);
        assert_eq!(one(&store, Command::Get("k".into())), found(b"v"));
        assert_eq!(one(&store, Command::Delete("k".into())), DONE);
        assert_eq!(one(&store, Command::Delete("k".into())), MISS);
        assert_eq!(one(&store, Command::Get("k".into())), MISS);
    }

    #[test]
    fn add_only_stores_new_keys() {
        let store = Embedded::default();
        assert_eq!(one(&store, Command::Add(item("k", b"1", None))), DONE);
        assert_eq!(
            one(&store, Command::Add(item("k", b"2", None))),
            (Outcome::Exists, Vec::new())
        );
        assert_eq!(one(&store, Command::Get("k".into())), found(b"1"));
    }

    #[test]
    fn entries_expire() {
        let store = Embedded::default();
        let now = Instant::now();
        let mut items = store.items();
        items.store(item("k", b"v", Some(1)), now);
        assert!(items.live("k", now).is_some());
        assert!(items.live("k", now + Duration::from_secs(1)).is_none());
        assert_eq!(items.bytes, 0);
    }

    #[test]
    fn memory_stays_bounded_and_recent_entries_survive() {
        let store = Embedded::default();
        let value = vec![7u8; 512 * 1024];
        for n in 0..300 {
            assert_eq!(one(&store, Command::Set(item(&format!("k{n}"), &value, None))), DONE);
        }
        assert!(store.items().bytes <= CAPACITY);
        assert_eq!(one(&store, Command::Get("k299".into())), found(&value));
        assert_eq!(one(&store, Command::Get("k0".into())), MISS);
    }

    #[test]
    fn broadcast_applies_everywhere() {
        let store = Embedded::default();
        store.broadcast(vec![Command::Set(item("a", b"1", None))]).unwrap();
        assert_eq!(one(&store, Command::Get("a".into())), found(b"1"));
    }
}
