//! Concurrent histories of the cache, and their check for linearizability
//! (docs/semantics.md, "Checked, not argued").
//!
//! Threads of several processes run a random workload on a few registers
//! (a tenant's key) and record every operation with the monotonic clock's
//! time it was invoked and returned (system-wide on Linux, so the records
//! of several processes merge). The history of each register is checked by
//! stateright's `LinearizabilityTester` against [`Register`], a sequential
//! specification of one key of the cache: a cache is a map of independent
//! registers, and a clear touches every key of its tenant, so it is
//! recorded into each of their histories. An operation that failed (the
//! server restarted, a deadline passed) may or may not have taken effect:
//! it stays in flight for ever, and its thread goes on under a new id.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};
use tenant_cache_host::{CacheError, LeaseOptions, Lookup, SwapToken, TenantCache};

/// Tenants of the workload; each has [`KEYS`] value keys and a counter.
pub const TENANTS: usize = 3;

/// Value keys of each tenant.
pub const KEYS: usize = 3;

/// The key of each tenant's counter.
const COUNTER: &str = "n";

/// One operation on a register, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `get`.
    Get,
    /// `set` of this value.
    Set(u64),
    /// `delete`.
    Delete,
    /// `clear` of the register's tenant.
    Clear,
    /// `clear-all`.
    ClearAll,
    /// `get-for-swap`, its token known by this id.
    ReadForSwap(u64),
    /// `compare-and-swap` with the token of read `.0`, storing `.1`.
    Swap(u64, u64),
    /// `compare-and-swap` with a token handed out for another key.
    Forged(u64),
    /// `get-or-lease`, a lease it hands out known by this id.
    Lease(u64),
    /// `fill` of lease `.0` with `.1`.
    Fill(u64, u64),
    /// `increment` by this delta.
    Increment(i64),
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// Done.
    Ok,
    /// A read: the value, or a miss.
    Value(Option<u64>),
    /// A swap or a fill: whether it stored.
    Stored(bool),
    /// The token was refused (`invalid-input`).
    Refused,
    /// `get-or-lease` found this value.
    Hit(u64),
    /// `get-or-lease` handed out the lease.
    Leased,
    /// `get-or-lease` found the lease held.
    Busy,
    /// `increment`'s count.
    Count(i64),
}

/// The sequential specification of one key: a value that only the
/// operations on it change. A read may miss, after which the value it
/// missed is gone (it never comes back). With `lossy` (faults that lose
/// data: a server restarted) a counter may also start again from 0, and a
/// lease be lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Register {
    lossy: bool,
    value: Option<u64>,
    /// Moves with every change: what a swap token's read saw.
    stamp: u64,
    reads: BTreeMap<u64, u64>,
    /// The lease taken since the last change, if any.
    holder: Option<u64>,
    count: i64,
}

impl Register {
    /// A register that starts missing.
    pub fn new(lossy: bool) -> Register {
        Register {
            lossy,
            ..Register::default()
        }
    }

    fn change(&mut self, value: Option<u64>) {
        self.value = value;
        self.stamp += 1;
        self.holder = None;
    }

    /// Whether a read returning `found` is valid now, and the state after it.
    /// A miss always is (a cache may lose an entry: evicted, or hidden for
    /// a moment by a write redone under newer versions, which writes over
    /// it), and the value it missed is never read again.
    fn read(&mut self, found: Option<u64>) -> bool {
        match found {
            Some(_) => found == self.value,
            None => {
                if self.value.is_some() {
                    self.change(None);
                }
                true
            }
        }
    }
}

impl SequentialSpec for Register {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match *op {
            Op::Get | Op::ReadForSwap(_) => Ret::Value(self.value),
            Op::Set(value) | Op::Swap(_, value) | Op::Fill(_, value) => {
                self.change(Some(value));
                Ret::Ok
            }
            Op::Delete | Op::Clear | Op::ClearAll => {
                self.change(None);
                self.count = 0;
                Ret::Ok
            }
            Op::Forged(_) => Ret::Refused,
            Op::Lease(_) => Ret::Busy,
            Op::Increment(delta) => {
                self.count = self.count.wrapping_add(delta);
                Ret::Count(self.count)
            }
        }
    }

    fn is_valid_step(&mut self, op: &Op, ret: &Ret) -> bool {
        match (op, ret) {
            (Op::Get, Ret::Value(found)) => self.read(*found),
            (Op::ReadForSwap(id), Ret::Value(found)) => {
                let valid = self.read(*found);
                self.reads.insert(*id, self.stamp);
                valid
            }
            (Op::Set(value), Ret::Ok) => {
                self.change(Some(*value));
                true
            }
            (Op::Delete | Op::Clear | Op::ClearAll, Ret::Ok) => {
                self.change(None);
                self.count = 0;
                true
            }
            // A swap stores only if nothing changed the key since its read;
            // it may fail when something it cannot see changed (a value
            // from before a clear, hidden, written over the entry).
            (Op::Swap(read, value), Ret::Stored(true)) => {
                let unchanged = self.reads.get(read) == Some(&self.stamp);
                self.change(Some(*value));
                unchanged
            }
            (Op::Swap(..), Ret::Stored(false)) => true,
            (Op::Forged(_), Ret::Refused) => true,
            (Op::Lease(_), Ret::Hit(value)) => self.value == Some(*value),
            // At most one lease at a time, on a missing value.
            (Op::Lease(id), Ret::Leased) => {
                let valid = self.value.is_none() && (self.holder.is_none() || self.lossy);
                self.holder = Some(*id);
                valid
            }
            // A miss that found the lease held, or that kept finding the key
            // changing: like a miss, always possible.
            (Op::Lease(_), Ret::Busy) => true,
            // A fill stores only while its lease is the key's latest change.
            (Op::Fill(id, value), Ret::Stored(true)) => {
                let held = self.holder == Some(*id);
                self.change(Some(*value));
                held
            }
            (Op::Fill(..), Ret::Stored(false)) => true,
            (Op::Increment(delta), Ret::Count(count)) => {
                let next = self.count.wrapping_add(*delta);
                let valid = *count == next || (self.lossy && *count == *delta);
                self.count = *count;
                valid
            }
            _ => false,
        }
    }
}

/// One operation as a thread recorded it: its register (tenant, key:
/// `None` for every key of the tenant, or with `ClearAll` of every
/// tenant), when it was invoked and when it returned (nanoseconds of the
/// monotonic clock), and what it returned (`None`: it failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The thread (unique across processes; a new one after a failure).
    pub thread: u32,
    /// The tenant's index.
    pub tenant: usize,
    /// The key, or `None` for every key of the tenant.
    pub key: Option<String>,
    /// The operation.
    pub op: Op,
    /// When it was invoked.
    pub invoked: u64,
    /// When it returned, and what; `None` if it failed.
    pub returned: Option<(u64, Ret)>,
}

/// Nanoseconds of the system-wide monotonic clock.
pub fn now() -> u64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match &self.op {
            Op::Get => String::from("get"),
            Op::Set(v) => format!("set:{v}"),
            Op::Delete => String::from("delete"),
            Op::Clear => String::from("clear"),
            Op::ClearAll => String::from("clear-all"),
            Op::ReadForSwap(id) => format!("read-for-swap:{id}"),
            Op::Swap(id, v) => format!("swap:{id}:{v}"),
            Op::Forged(v) => format!("forged:{v}"),
            Op::Lease(id) => format!("lease:{id}"),
            Op::Fill(id, v) => format!("fill:{id}:{v}"),
            Op::Increment(d) => format!("increment:{d}"),
        };
        let ret = match &self.returned {
            None => String::from("- failed"),
            Some((at, ret)) => format!(
                "{at} {}",
                match ret {
                    Ret::Ok => String::from("ok"),
                    Ret::Value(None) => String::from("miss"),
                    Ret::Value(Some(v)) => format!("value:{v}"),
                    Ret::Stored(stored) => format!("stored:{stored}"),
                    Ret::Refused => String::from("refused"),
                    Ret::Hit(v) => format!("hit:{v}"),
                    Ret::Leased => String::from("leased"),
                    Ret::Busy => String::from("busy"),
                    Ret::Count(n) => format!("count:{n}"),
                }
            ),
        };
        let key = self.key.as_deref().unwrap_or("*");
        write!(f, "{} {} {key} {op} {} {ret}", self.thread, self.tenant, self.invoked)
    }
}

impl FromStr for Record {
    type Err = String;

    fn from_str(line: &str) -> Result<Record, String> {
        let bad = || format!("not a history record: {line:?}");
        let fields: Vec<&str> = line.split(' ').collect();
        let [thread, tenant, key, op, invoked, returned, ret] = fields[..] else {
            return Err(bad());
        };
        let number = |text: &str| text.parse::<u64>().map_err(|_| bad());
        let parts: Vec<&str> = op.split(':').collect();
        let op = match parts[..] {
            ["get"] => Op::Get,
            ["set", v] => Op::Set(number(v)?),
            ["delete"] => Op::Delete,
            ["clear"] => Op::Clear,
            ["clear-all"] => Op::ClearAll,
            ["read-for-swap", id] => Op::ReadForSwap(number(id)?),
            ["swap", id, v] => Op::Swap(number(id)?, number(v)?),
            ["forged", v] => Op::Forged(number(v)?),
            ["lease", id] => Op::Lease(number(id)?),
            ["fill", id, v] => Op::Fill(number(id)?, number(v)?),
            ["increment", d] => Op::Increment(d.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        let parts: Vec<&str> = ret.split(':').collect();
        let ret = match parts[..] {
            ["failed"] => None,
            ["ok"] => Some(Ret::Ok),
            ["miss"] => Some(Ret::Value(None)),
            ["value", v] => Some(Ret::Value(Some(number(v)?))),
            ["stored", stored] => Some(Ret::Stored(stored == "true")),
            ["refused"] => Some(Ret::Refused),
            ["hit", v] => Some(Ret::Hit(number(v)?)),
            ["leased"] => Some(Ret::Leased),
            ["busy"] => Some(Ret::Busy),
            ["count", n] => Some(Ret::Count(n.parse().map_err(|_| bad())?)),
            _ => return Err(bad()),
        };
        let returned = match (returned, ret) {
            ("-", None) => None,
            (at, Some(ret)) => Some((number(at)?, ret)),
            _ => return Err(bad()),
        };
        Ok(Record {
            thread: thread.parse().map_err(|_| bad())?,
            tenant: tenant.parse().map_err(|_| bad())?,
            key: (key != "*").then(|| key.to_owned()),
            op,
            invoked: number(invoked)?,
            returned,
        })
    }
}

/// The tenant of index `n`.
pub fn tenant(n: usize) -> String {
    format!("lin-{n}")
}

/// Every register: (tenant, key).
fn registers() -> Vec<(usize, String)> {
    let mut all = Vec::new();
    for tenant in 0..TENANTS {
        for key in 0..KEYS {
            all.push((tenant, format!("k{key}")));
        }
        all.push((tenant, String::from(COUNTER)));
    }
    all
}

/// What the check of a history found.
#[derive(Debug)]
pub struct Checked {
    /// Operations recorded (a clear counted once).
    pub operations: usize,
    /// Registers checked, each a history of its own.
    pub histories: usize,
    /// Operations that failed, left in flight.
    pub failed: usize,
    /// For each register whose history is not linearizable: the register
    /// and its history, in the order the records were invoked.
    pub violations: Vec<String>,
}

/// Checks `records` register by register; `lossy`: faults that lose data
/// were injected.
pub fn check(records: &[Record], lossy: bool) -> Checked {
    let mut violations = Vec::new();
    let registers = registers();
    for (tenant, key) in &registers {
        let mut mine: Vec<&Record> = records
            .iter()
            .filter(|record| {
                record.op == Op::ClearAll
                    || (record.tenant == *tenant && record.key.as_ref().is_none_or(|own| own == key))
            })
            .collect();
        mine.sort_by_key(|record| record.invoked);
        // Invocations and returns in time order (an invocation first at
        // equal times: the two may then have overlapped).
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (index, record) in mine.iter().enumerate() {
            events.push((record.invoked, false, index));
            if let Some((at, _)) = &record.returned {
                events.push((*at, true, index));
            }
        }
        events.sort();
        let mut tester = LinearizabilityTester::new(Register::new(lossy));
        let mut refused = None;
        for (_, is_return, index) in events {
            let record = mine[index];
            let fed = match (is_return, &record.returned) {
                (false, _) => tester.on_invoke(record.thread, record.op.clone()).map(drop),
                (true, Some((_, ret))) => tester.on_return(record.thread, ret.clone()).map(drop),
                (true, None) => Ok(()),
            };
            if let Err(why) = fed {
                refused = Some(why);
                break;
            }
        }
        if refused.is_some() || !tester.is_consistent() {
            let lines: Vec<String> = mine.iter().map(|record| record.to_string()).collect();
            violations.push(format!(
                "register {}/{key}{}: not linearizable; its history (thread tenant key op invoked returned ret):\n{}",
                self::tenant(*tenant),
                refused.map(|why| format!(" ({why})")).unwrap_or_default(),
                lines.join("\n")
            ));
        }
    }
    Checked {
        operations: records.len(),
        histories: registers.len(),
        failed: records.iter().filter(|record| record.returned.is_none()).count(),
        violations,
    }
}

/// A small deterministic generator (xorshift), so a workload is replayed
/// from its seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Runs `operations` random operations on `cache` as thread `thread`
/// (unique across every process of a run), calling `record` with each.
/// Values are unique to the thread, so a read names the write it saw.
pub fn run_workload(cache: &mut TenantCache, thread: u32, operations: usize, mut record: impl FnMut(Record)) {
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15 ^ (u64::from(thread) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    // A failed operation's thread goes on under a new id.
    let mut epoch = 0u32;
    let mut unique = 0u64;
    let mut fresh = || {
        unique += 1;
        (u64::from(thread) << 24) | unique
    };
    let lease = LeaseOptions {
        lease_ttl: 3600,
        ..LeaseOptions::default()
    };
    for _ in 0..operations {
        let tenant_index = draw.next(TENANTS as u64) as usize;
        let tenant = self::tenant(tenant_index);
        let key = format!("k{}", draw.next(KEYS as u64));
        let id = thread * 4096 + epoch;
        let mut one = |key: Option<&str>, op: Op, call: &mut dyn FnMut() -> Result<Ret, CacheError>| -> bool {
            let invoked = now();
            let result = call();
            let returned = result.ok().map(|ret| (now(), ret));
            let failed = returned.is_none();
            record(Record {
                thread: id,
                tenant: tenant_index,
                key: key.map(str::to_owned),
                op,
                invoked,
                returned,
            });
            !failed
        };
        let value = |bytes: Option<Vec<u8>>| -> Option<u64> {
            bytes.and_then(|bytes| String::from_utf8(bytes).ok()?.strip_prefix('v')?.parse().ok())
        };
        let ok = match draw.next(100) {
            0..=29 => one(Some(&key), Op::Get, &mut || {
                Ok(Ret::Value(value(cache.get(&tenant, &key)?)))
            }),
            30..=49 => {
                let v = fresh();
                one(Some(&key), Op::Set(v), &mut || {
                    cache
                        .set(&tenant, &key, format!("v{v}").as_bytes(), None)
                        .map(|()| Ret::Ok)
                })
            }
            50..=53 => one(Some(&key), Op::Delete, &mut || {
                cache.delete(&tenant, &key).map(|()| Ret::Ok)
            }),
            54..=57 => one(None, Op::Clear, &mut || cache.clear(&tenant).map(|()| Ret::Ok)),
            58 => one(None, Op::ClearAll, &mut || cache.clear_all().map(|()| Ret::Ok)),
            59..=72 => {
                let read = fresh();
                let mut token = None;
                let read_ok = one(Some(&key), Op::ReadForSwap(read), &mut || {
                    let swappable = cache.get_for_swap(&tenant, &key)?;
                    token = Some(swappable.token);
                    Ok(Ret::Value(value(swappable.value)))
                });
                match (read_ok, token) {
                    (true, Some(token)) => {
                        let v = fresh();
                        one(Some(&key), Op::Swap(read, v), &mut || {
                            cache
                                .compare_and_swap(&tenant, &key, format!("v{v}").as_bytes(), &token)
                                .map(Ret::Stored)
                        })
                    }
                    _ => false,
                }
            }
            73..=75 => {
                // A token handed out for another key of the tenant, or one
                // made up (the review's `swap1:e:x:x:-`, and the like).
                let other = format!("k{}", (key[1..].parse::<usize>().unwrap_or(0) + 1) % KEYS);
                let made_up = ["swap1:e:x:x:-", "swap2:e:x:x:-", "swap1:e:m:m:-"];
                let forged = match draw.next(2) {
                    0 => cache.get_for_swap(&tenant, &other).map(|read| read.token),
                    _ => Ok(SwapToken::from(String::from(made_up[draw.next(3) as usize]))),
                };
                match forged {
                    Ok(forged) => {
                        let v = fresh();
                        one(Some(&key), Op::Forged(v), &mut || match cache.compare_and_swap(
                            &tenant,
                            &key,
                            format!("v{v}").as_bytes(),
                            &forged,
                        ) {
                            Err(CacheError::InvalidInput(_)) => Ok(Ret::Refused),
                            Ok(stored) => Ok(Ret::Stored(stored)),
                            Err(error) => Err(error),
                        })
                    }
                    Err(_) => true,
                }
            }
            76..=89 => {
                let lease_id = fresh();
                let mut token = None;
                let leased = one(Some(&key), Op::Lease(lease_id), &mut || {
                    Ok(match cache.get_or_lease(&tenant, &key, &lease)? {
                        Lookup::Hit(bytes) => match value(Some(bytes)) {
                            Some(v) => Ret::Hit(v),
                            None => Ret::Busy,
                        },
                        Lookup::Lease(t) => {
                            token = Some(t);
                            Ret::Leased
                        }
                        Lookup::Stale(_) | Lookup::Busy => Ret::Busy,
                    })
                });
                match (leased, token) {
                    (true, Some(token)) => {
                        // Now and then the tenant is cleared while the value
                        // is computed: the fill comes from before the clear.
                        let mut ok = true;
                        if draw.next(4) == 0 {
                            ok = one(None, Op::Clear, &mut || cache.clear(&tenant).map(|()| Ret::Ok));
                        }
                        let v = fresh();
                        ok && one(Some(&key), Op::Fill(lease_id, v), &mut || {
                            cache
                                .fill(&tenant, &key, format!("v{v}").as_bytes(), None, &token)
                                .map(Ret::Stored)
                        })
                    }
                    (ok, _) => ok,
                }
            }
            _ => {
                let delta = draw.next(5) as i64 + 1;
                one(Some(COUNTER), Op::Increment(delta), &mut || {
                    cache.increment(&tenant, COUNTER, delta).map(Ret::Count)
                })
            }
        };
        if !ok {
            epoch += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(thread: u32, key: &str, op: Op, invoked: u64, returned: u64, ret: Ret) -> Record {
        Record {
            thread,
            tenant: 0,
            key: (key != "*").then(|| key.to_owned()),
            op,
            invoked,
            returned: Some((returned, ret)),
        }
    }

    #[test]
    fn records_round_trip_as_text() {
        let records = [
            record(1, "k0", Op::Swap(3, 4), 10, 20, Ret::Stored(true)),
            record(2, "*", Op::Clear, 11, 12, Ret::Ok),
            record(3, "n", Op::Increment(-2), 5, 6, Ret::Count(-7)),
            Record {
                returned: None,
                ..record(4, "k1", Op::Lease(9), 1, 0, Ret::Ok)
            },
        ];
        for record in records {
            assert_eq!(record.to_string().parse::<Record>(), Ok(record));
        }
    }

    /// The checker itself: histories that break a guarantee are caught.
    #[test]
    fn the_checker_rejects_what_the_cache_must_never_do() {
        let good = vec![
            record(1, "k0", Op::Set(1), 0, 10, Ret::Ok),
            record(2, "k0", Op::Get, 5, 6, Ret::Value(None)),
            record(2, "k0", Op::Get, 11, 12, Ret::Value(Some(1))),
            record(1, "*", Op::Clear, 13, 14, Ret::Ok),
            record(2, "k0", Op::Get, 15, 16, Ret::Value(None)),
        ];
        assert!(check(&good, false).violations.is_empty());
        // Each bad history, and whether it is bad also where data may be
        // lost (a lost lease frees the key).
        let bad: Vec<(Vec<Record>, bool)> = vec![
            // A cleared value read after the clear.
            (
                vec![
                    record(1, "k0", Op::Set(1), 0, 1, Ret::Ok),
                    record(1, "*", Op::Clear, 2, 3, Ret::Ok),
                    record(2, "k0", Op::Get, 4, 5, Ret::Value(Some(1))),
                ],
                true,
            ),
            // A swap that stored over a write made after its read.
            (
                vec![
                    record(1, "k0", Op::ReadForSwap(7), 0, 1, Ret::Value(None)),
                    record(2, "k0", Op::Set(2), 2, 3, Ret::Ok),
                    record(1, "k0", Op::Swap(7, 3), 4, 5, Ret::Stored(true)),
                ],
                true,
            ),
            // A forged token that stored.
            (vec![record(1, "k0", Op::Forged(3), 0, 1, Ret::Stored(true))], true),
            // A fill over a value written after its lease.
            (
                vec![
                    record(1, "k0", Op::Lease(7), 0, 1, Ret::Leased),
                    record(2, "k0", Op::Set(2), 2, 3, Ret::Ok),
                    record(1, "k0", Op::Fill(7, 3), 4, 5, Ret::Stored(true)),
                ],
                true,
            ),
            // Two leases at once.
            (
                vec![
                    record(1, "k0", Op::Lease(7), 0, 1, Ret::Leased),
                    record(2, "k0", Op::Lease(8), 2, 3, Ret::Leased),
                ],
                false,
            ),
            // A count from before a clear.
            (
                vec![
                    record(1, "n", Op::Increment(1), 0, 1, Ret::Count(1)),
                    record(1, "*", Op::Clear, 2, 3, Ret::Ok),
                    record(2, "n", Op::Increment(1), 4, 5, Ret::Count(2)),
                ],
                true,
            ),
            // A value that came back after a read missed it.
            (
                vec![
                    record(1, "k0", Op::Set(1), 0, 1, Ret::Ok),
                    record(2, "k0", Op::Get, 2, 3, Ret::Value(None)),
                    record(2, "k0", Op::Get, 4, 5, Ret::Value(Some(1))),
                ],
                true,
            ),
            // A read of a value never written.
            (vec![record(2, "k0", Op::Get, 4, 5, Ret::Value(Some(9)))], true),
        ];
        for (history, also_lossy) in bad {
            for lossy in [false, true] {
                let checked = check(&history, lossy);
                let expected = usize::from(!lossy || also_lossy);
                assert_eq!(checked.violations.len(), expected, "lossy {lossy}: {history:#?}");
            }
        }
    }
}
