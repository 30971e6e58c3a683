//! `run`'s budget flags: the share of the cache the app gets
//! (`Grant::with_budgets`).

use clap::Args;
use tenant_cache_host::{Budgets, Rate};

/// What the app may write and send per second, and how long its entries
/// live. Over a budget, a call fails with `over-limit` saying which budget
/// and when to retry, and writes nothing.
#[derive(Args, Debug, Default)]
pub struct BudgetFlags {
    /// Bytes of keys and values the app may store per second (at least
    /// 1k; with k or m); no bound by default.
    #[arg(long, value_name = "SIZE", value_parser = tenant_cache_memcached::rules::parse_size)]
    write_budget: Option<u64>,
    /// Commands the app may send to memcached per second (a warm get or
    /// set is one batch of about three, the first call of a process about
    /// seven: a budget that holds fewer refuses it); no bound by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    command_budget: Option<u64>,
    /// How many seconds of its rate a budget holds, for bursts; a call
    /// costing more than that is refused whatever the wait.
    #[arg(long, value_name = "S", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    burst_seconds: u64,
    /// The longest an entry may live, in seconds: a store without a TTL,
    /// or with a longer one, gets this one.
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(1..))]
    max_ttl: Option<u32>,
}

impl BudgetFlags {
    /// The budgets the flags ask for.
    pub fn budgets(&self) -> Budgets {
        let rate = |per_second: u64| Rate {
            per_second,
            burst: per_second.saturating_mul(self.burst_seconds),
        };
        Budgets {
            bytes_written: self.write_budget.map(rate),
            commands: self.command_budget.map(rate),
            max_ttl: self.max_ttl,
        }
    }
}
