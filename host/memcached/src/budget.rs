//! A tenant's share of the cache, as a platform sets it on a grant: how
//! many bytes it may store and how many commands it may send per second
//! (token buckets with a burst), and how long its entries may live. A
//! tenant that writes without end would otherwise make memcached evict
//! every other tenant's entries (one LRU for everyone).
//!
//! Pure logic: the caller passes the time, and keeps the [`Buckets`] where
//! every instance serving the tenant finds them.

use std::time::Instant;

use crate::types::{Budget, Command, OverBudget};

/// `per_second` units flow in each second, up to `burst` held; a budget
/// starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u64,
    pub burst: u64,
}

/// What a grant may spend. `None`: no bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Bytes of keys and values stored ([`Cost::bytes_written`]).
    pub bytes_written: Option<Rate>,
    /// Commands sent.
    pub commands: Option<Rate>,
    /// The longest an entry may live, in seconds (at least 1): a store
    /// with no TTL, or a longer one, gets this one.
    pub max_ttl: Option<u32>,
}

impl Budgets {
    /// Whether any budget is set (a grant without one skips the buckets).
    pub fn is_set(&self) -> bool {
        *self != Budgets::default()
    }

    /// Gives every store of `commands` a TTL of at most `max_ttl`. Run it
    /// on the batch as the component sent it: its `new-version` commands
    /// are no stores yet (the rules make them stores of the versions the
    /// host draws), so a tenant's version lives on, while an entry that
    /// expires is a miss like an evicted one.
    pub fn cap_ttls(&self, commands: &mut [Command]) {
        let Some(cap) = self.max_ttl else { return };
        for command in commands {
            if let Command::Set(item) | Command::Add(item) | Command::SetIfCas(crate::types::CasItem { item, .. }) =
                command
            {
                // memcached reads a TTL of 0 as none: a cap is a second at least.
                let cap = cap.max(1);
                item.ttl = Some(item.ttl.map_or(cap, |ttl| ttl.min(cap)));
            }
        }
    }
}

/// What a batch costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// The bytes of the keys and values it stores, as the caller gave them
    /// (memcached adds its own per item).
    pub bytes_written: u64,
    /// Its commands.
    pub commands: u64,
}

impl Cost {
    /// The cost of `commands`.
    pub fn of(commands: &[Command]) -> Cost {
        let bytes_written = commands
            .iter()
            .map(|command| match command {
                Command::Set(item) | Command::Add(item) => (item.key.len() + item.value.len()) as u64,
                Command::SetIfCas(cas_item) => (cas_item.item.key.len() + cas_item.item.value.len()) as u64,
                _ => 0,
            })
            .sum();
        Cost {
            bytes_written,
            commands: commands.len() as u64,
        }
    }
}

/// One budget's bucket: what was spent below full, as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    spent: f64,
    at: Instant,
}

impl Bucket {
    /// What is still spent at `now`, once what flowed in since is counted.
    fn spent_at(&self, rate: Rate, now: Instant) -> f64 {
        let flowed = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second as f64;
        (self.spent - flowed).max(0.0)
    }

    /// Whether `cost` fits at `now`; if not, the refusal.
    fn check(&self, budget: Budget, rate: Rate, cost: u64, now: Instant) -> Result<f64, OverBudget> {
        let spent = self.spent_at(rate, now) + cost as f64;
        if spent <= rate.burst as f64 {
            return Ok(spent);
        }
        let retry_after_ms = (cost <= rate.burst && rate.per_second > 0)
            .then(|| ((spent - rate.burst as f64) * 1000.0 / rate.per_second as f64).ceil() as u64);
        Err(OverBudget {
            budget,
            per_second: rate.per_second,
            burst: rate.burst,
            retry_after_ms,
        })
    }
}

/// The buckets of one grant's budgets (of one tenant, on a bound grant):
/// shared by every instance serving it.
#[derive(Clone, Copy, Debug)]
pub struct Buckets {
    bytes_written: Bucket,
    commands: Bucket,
}

impl Buckets {
    /// Full buckets.
    pub fn new(now: Instant) -> Buckets {
        let full = Bucket { spent: 0.0, at: now };
        Buckets {
            bytes_written: full,
            commands: full,
        }
    }

    /// Pays `cost` from the buckets of `budgets`, all or nothing: a batch
    /// that one budget cannot pay for takes nothing from the other.
    pub fn charge(&mut self, budgets: &Budgets, cost: Cost, now: Instant) -> Result<(), OverBudget> {
        let bytes = match budgets.bytes_written {
            Some(rate) => Some(
                self.bytes_written
                    .check(Budget::BytesWritten, rate, cost.bytes_written, now)?,
            ),
            None => None,
        };
        let commands = match budgets.commands {
            Some(rate) => Some(self.commands.check(Budget::Commands, rate, cost.commands, now)?),
            None => None,
        };
        if let Some(spent) = bytes {
            self.bytes_written = Bucket { spent, at: now };
        }
        if let Some(spent) = commands {
            self.commands = Bucket { spent, at: now };
        }
        Ok(())
    }

    /// Whether the buckets are full again at `now`: they then hold nothing
    /// new buckets would not, and can be forgotten.
    pub fn are_full(&self, budgets: &Budgets, now: Instant) -> bool {
        let full = |bucket: &Bucket, rate: Option<Rate>| rate.is_none_or(|rate| bucket.spent_at(rate, now) == 0.0);
        full(&self.bytes_written, budgets.bytes_written) && full(&self.commands, budgets.commands)
    }
}

/// A refusal as a person reads it.
pub fn describe(over: &OverBudget) -> String {
    let (unit, what) = match over.budget {
        Budget::BytesWritten => ("bytes", "bytes written"),
        Budget::Commands => ("commands", "commands"),
    };
    match over.retry_after_ms {
        Some(ms) => format!(
            "over the budget of {} {what} per second (burst {} {unit}): refused before anything was sent; retry \
             in {ms} ms",
            over.per_second, over.burst
        ),
        None => format!(
            "the call needs more than the budget of {} {what} per second can ever hold (burst {} {unit}): \
             refused before anything was sent; split the call, or raise the burst",
            over.per_second, over.burst
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::{CasItem, Item};

    fn set(key: &str, len: usize, ttl: Option<u32>) -> Command {
        Command::Set(Item {
            key: key.into(),
            value: vec![0; len],
            ttl,
        })
    }

    fn bytes(per_second: u64, burst: u64) -> Budgets {
        Budgets {
            bytes_written: Some(Rate { per_second, burst }),
            ..Budgets::default()
        }
    }

    fn cost(bytes_written: u64, commands: u64) -> Cost {
        Cost {
            bytes_written,
            commands,
        }
    }

    #[test]
    fn a_batch_costs_the_keys_and_values_it_stores_and_its_commands() {
        let commands = [
            set("k", 10, None),
            Command::Get("other".into()),
            Command::SetIfCas(CasItem {
                item: Item {
                    key: "kk".into(),
                    value: vec![1; 5],
                    ttl: None,
                },
                cas: 3,
            }),
            Command::Delete("k".into()),
        ];
        assert_eq!(Cost::of(&commands), cost(11 + 7, 4));
    }

    #[test]
    fn a_burst_is_spent_exactly_then_refused_with_the_wait() {
        let start = Instant::now();
        let budgets = bytes(100, 1000);
        let mut buckets = Buckets::new(start);
        assert_eq!(buckets.charge(&budgets, cost(600, 1), start), Ok(()));
        assert_eq!(buckets.charge(&budgets, cost(400, 1), start), Ok(()));
        let refused = buckets.charge(&budgets, cost(50, 1), start).unwrap_err();
        assert_eq!(
            refused,
            OverBudget {
                budget: Budget::BytesWritten,
                per_second: 100,
                burst: 1000,
                retry_after_ms: Some(500),
            }
        );
        // Half a second later, the 50 bytes flowed in, and no more.
        let later = start + Duration::from_millis(500);
        assert_eq!(buckets.charge(&budgets, cost(50, 1), later), Ok(()));
        assert!(buckets.charge(&budgets, cost(1, 1), later).is_err());
    }

    #[test]
    fn a_batch_larger_than_the_burst_is_never_paid_for() {
        let start = Instant::now();
        let budgets = bytes(100, 1000);
        let mut buckets = Buckets::new(start);
        let refused = buckets.charge(&budgets, cost(1001, 1), start).unwrap_err();
        assert_eq!(refused.retry_after_ms, None);
        assert!(describe(&refused).contains("raise the burst"), "{}", describe(&refused));
        assert_eq!(buckets.charge(&budgets, cost(1000, 1), start), Ok(()));
    }

    #[test]
    fn a_refusal_by_one_budget_takes_nothing_from_the_other() {
        let start = Instant::now();
        let budgets = Budgets {
            commands: Some(Rate {
                per_second: 1,
                burst: 3,
            }),
            ..bytes(1, 100)
        };
        let mut buckets = Buckets::new(start);
        // The commands pass, the bytes do not: the commands stay unspent.
        assert_eq!(
            buckets.charge(&budgets, cost(101, 3), start).unwrap_err().budget,
            Budget::BytesWritten
        );
        assert_eq!(buckets.charge(&budgets, cost(100, 3), start), Ok(()));
        assert_eq!(
            buckets.charge(&budgets, cost(0, 1), start).unwrap_err().budget,
            Budget::Commands
        );
    }

    #[test]
    fn buckets_refill_to_full_and_no_further() {
        let start = Instant::now();
        let budgets = bytes(1000, 1000);
        let mut buckets = Buckets::new(start);
        buckets.charge(&budgets, cost(1000, 1), start).unwrap();
        assert!(!buckets.are_full(&budgets, start + Duration::from_millis(999)));
        let idle = start + Duration::from_secs(60);
        assert!(buckets.are_full(&budgets, idle));
        assert_eq!(buckets.charge(&budgets, cost(1000, 1), idle), Ok(()));
        assert!(buckets.charge(&budgets, cost(1, 1), idle).is_err());
    }

    #[test]
    fn a_ttl_cap_shortens_stores_and_leaves_the_rest() {
        let budgets = Budgets {
            max_ttl: Some(60),
            ..Budgets::default()
        };
        let mut commands = vec![
            set("forever", 1, None),
            set("long", 1, Some(3600)),
            set("short", 1, Some(5)),
        ];
        commands.push(Command::Get("k".into()));
        let version = Command::NewVersion(crate::types::NewVersion {
            key: "n:t".into(),
            write: crate::types::VersionWrite::Create,
        });
        commands.push(version.clone());
        budgets.cap_ttls(&mut commands);
        let ttls: Vec<Option<u32>> = commands
            .iter()
            .filter_map(|command| match command {
                Command::Set(item) => Some(item.ttl),
                _ => None,
            })
            .collect();
        assert_eq!(ttls, [Some(60), Some(60), Some(5)]);
        assert_eq!(commands[3..], [Command::Get("k".into()), version]);
    }
}
