//! `pool set`: making a server list the pool. Every write of the pool
//! record is a compare-and-swap against what was read (memcached's CAS),
//! and a change goes through one server first, its *anchor* (the first
//! member of the record it changes, see `Membership::anchor`):
//!
//! 1. **claim**: the anchor's record is swapped for the new record marked
//!    as changing. Concurrent changes of one record all claim the same
//!    anchor, so at most one gets past this step; the others fail having
//!    written nothing.
//! 2. **convert**: every other server of the old and the new list gets the
//!    changing record too (every process refuses it).
//! 3. **commit**: the anchor's changing record is swapped for the active
//!    one. Only once every server holds the changing record, so no server
//!    shows the old record once any shows the new one.
//! 4. **propagate**: the other servers get the active record.
//!
//! An interrupted change stays claimed at the anchor: `pool set` with the
//! same servers (in any order) completes it; with another list it builds
//! its change on top of it (the anchor is claimed again, from the changing
//! record), so the pool ends on that list. A changing record never goes
//! back to the record it replaced.

use std::collections::BTreeMap;

use tenant_cache_memcached::membership::{Membership, sorted};
use tenant_cache_memcached::protocol::{Own, Request, describe};
use tenant_cache_memcached::types::Error;

use super::{Blocking, MemcachedPool};

/// What a server holds, as last read: its record and the record's CAS
/// value; `None` if it holds none; an error if it did not answer.
type Held = Result<Option<(Vec<u8>, u64)>, Error>;

/// A change to make: the record it ends on, the anchors to claim (one per
/// pool the listed servers hold records of; the first is where it
/// commits), and every server it writes.
struct Plan {
    target: Membership,
    anchors: Vec<String>,
    servers: Vec<String>,
}

impl MemcachedPool {
    /// Makes the listed servers the pool (see the module docs). Servers
    /// leaving the pool must be reachable (they are fenced off: they keep a
    /// record saying they left), unless `force`.
    pub(crate) async fn set_membership_with(&self, force: bool) -> Result<Membership, Error> {
        let listed = self.pool.ids.join(",");
        let mut pools = Vec::new();
        for (server, result) in self.pool.survey(&Blocking(self)).await.into_iter().enumerate() {
            let surveyed = result
                .map_err(|error| unavailable(&error, "every server of the new pool must be reachable to join it"))?;
            if let Some((stored, _)) = surveyed.record {
                let record = self.pool.parse_record(server, &stored)?;
                newest_of_its_pool(&mut pools, record);
            }
        }
        if pools.is_empty() {
            return Err(Error::Unavailable(format!(
                "memcached at {listed} holds no pool record: there is no pool to change (the first process to use \
                 these servers records one). To move a pool onto them, run `pool set` with the pool's servers and \
                 these together, then with these alone: the servers leaving are fenced on the way"
            )));
        }
        // The anchors have the last word: what one holds may be newer than
        // what the listed servers hold (a change under way).
        let (pools, all, mut held) = 'settled: {
            for _ in 0..4 {
                let mut reach: Vec<String> = self.pool.ids.clone();
                for pool in &pools {
                    reach.extend(pool.written_by_change());
                    reach.extend(pool.servers());
                    reach.push(pool.anchor().to_owned());
                }
                let all = MemcachedPool::new(&sorted(&reach), self.options.clone())
                    .map_err(|error| Error::Unavailable(format!("{error:#}")))?;
                let held: BTreeMap<String, Held> = all
                    .pool
                    .survey(&Blocking(&all))
                    .await
                    .into_iter()
                    .zip(&all.pool.ids)
                    .map(|(result, server)| (server.clone(), result.map(|surveyed| surveyed.record)))
                    .collect();
                let mut moved = false;
                for pool in &mut pools {
                    if let Some(Ok(Some((stored, _)))) = held.get(pool.anchor()) {
                        let at_anchor = Membership::parse(stored).map_err(Error::Protocol)?;
                        if at_anchor.id == pool.id && newer(&at_anchor, pool) {
                            *pool = at_anchor;
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break 'settled (pools, all, held);
                }
            }
            return Err(concurrent(&listed));
        };
        // Records processes with other lists made at first use on listed
        // servers that had lost the pool's are replaced, not merged, when
        // the listed servers hold the pool's record of exactly this list:
        // the operator says which list is the pool (whichever was recorded
        // first), the pool keeps its id and every route its tag, and no
        // tenant whose server kept its entries loses them.
        let (pools, strays) = without_strays(pools, &self.pool.ids);
        if let [pool] = pools.as_slice()
            && !pool.changing
            && pool.lists(&self.pool.ids)
            && self.pool.ids.iter().all(|server| holds(&held, server, &pool.encode()))
        {
            // Already the pool, on every listed server.
            return Ok(self.pool.remember(pool.clone()).record.clone());
        }
        let plan = self.plan(&pools)?;
        // Every server the change writes must answer, those leaving only
        // unless `force`; an anchor that does not is replaced (forced) by
        // the first server of its pool that does.
        let mut anchors = Vec::new();
        for anchor in &plan.anchors {
            match held.get(anchor) {
                Some(Ok(_)) => anchors.push(anchor.clone()),
                _ if force && !self.pool.ids.contains(anchor) => {
                    let standin = pools
                        .iter()
                        .find(|pool| pool.anchor() == anchor)
                        .into_iter()
                        .flat_map(|pool| pool.servers())
                        .find(|server| matches!(held.get(server), Some(Ok(_))))
                        .ok_or_else(|| {
                            Error::Unavailable(format!(
                                "no server of the pool anchored at {anchor} answers: nothing can be changed safely"
                            ))
                        })?;
                    anchors.push(standin);
                }
                Some(Err(error)) => return Err(unavailable(error, LEAVING)),
                None => return Err(Error::Protocol(format!("{anchor} was not surveyed"))),
            }
        }
        let mut writes = Vec::new();
        for server in &plan.servers {
            match held.get(server) {
                Some(Ok(_)) => writes.push(server.clone()),
                Some(Err(_)) if force && !self.pool.ids.contains(server) => {}
                Some(Err(error)) => return Err(unavailable(error, LEAVING)),
                None => return Err(Error::Protocol(format!("{server} was not surveyed"))),
            }
        }
        let changing = plan.target.changing_at(&anchors[0]).encode();
        let active = plan.target.encode();
        // 1. Claim every anchor, in order; the first is where it commits.
        for (index, anchor) in anchors.iter().enumerate() {
            if holds(&held, anchor, &changing) {
                continue;
            }
            let claimed = all.swap(anchor, held_now(&held, anchor), &changing).await?;
            if !holds_bytes(&claimed, &changing) {
                return Err(match index {
                    0 => concurrent(&listed),
                    _ => pending(&listed, &describe_held(anchor, &claimed)),
                });
            }
            held.insert(anchor.clone(), claimed);
        }
        let others: Vec<String> = writes
            .iter()
            .filter(|server| !anchors.contains(server))
            .cloned()
            .collect();
        // 2. Every other server gets the changing record.
        let planned: Vec<Membership> = pools.iter().chain(&strays).cloned().collect();
        let change = Change {
            planned: &planned,
            ours: [&changing, &active],
            listed: &listed,
        };
        all.converge(&others, &mut held, &changing, &change).await?;
        // 3. Commit at the first anchor.
        let committed = all.swap(&anchors[0], held_now(&held, &anchors[0]), &active).await?;
        if !holds_bytes(&committed, &active) {
            return Err(Error::Unavailable(format!(
                "another `pool set` took the change to {listed} over before it committed ({}); run `pool show`",
                describe_held(&anchors[0], &committed)
            )));
        }
        held.insert(anchors[0].clone(), committed);
        // 4. Every other server gets the active record.
        let rest: Vec<String> = writes.iter().filter(|server| **server != anchors[0]).cloned().collect();
        all.converge(&rest, &mut held, &active, &change).await?;
        Ok(self.pool.remember(plan.target).record.clone())
    }

    /// The change that makes the listed servers the pool, over `pools` (the
    /// newest record of each pool the listed servers hold records of).
    fn plan(&self, pools: &[Membership]) -> Result<Plan, Error> {
        let (target, mut servers) = match pools {
            [pool] if pool.changing && pool.lists(&self.pool.ids) => {
                // A change to this very list, interrupted: complete it.
                let target = pool.committed();
                (target.clone(), target.written_by_change())
            }
            [pool] if pool.changing => {
                // A change to another list, interrupted: build on it.
                let pending = pool.committed();
                let target = pending.next(&self.pool.ids).map_err(Error::Protocol)?;
                let servers = [pending.written_by_change(), target.written_by_change()].concat();
                (target, servers)
            }
            [pool] => {
                let target = pool.next(&self.pool.ids).map_err(Error::Protocol)?;
                (target.clone(), target.written_by_change())
            }
            _ => {
                // Records of several pools: one new pool of these servers,
                // every route tagged anew, the others' servers fenced.
                let newest = pools.iter().map(|pool| pool.generation).max().unwrap_or(1);
                let old: Vec<String> = pools
                    .iter()
                    .flat_map(|pool| [pool.servers(), pool.written_by_change()].concat())
                    .collect();
                let target =
                    Membership::merged(&self.pool.ids, rand::random(), newest, &old).map_err(Error::Protocol)?;
                (target.clone(), target.written_by_change())
            }
        };
        let anchors = sorted(&pools.iter().map(|pool| pool.anchor().to_owned()).collect::<Vec<_>>());
        servers.extend(anchors.iter().cloned());
        servers.extend(self.pool.ids.iter().cloned());
        Ok(Plan {
            target,
            anchors,
            servers: sorted(&servers),
        })
    }

    /// Stores `record` on `server` if it still holds what was read (`held`:
    /// swapped by CAS value, or added where none was), and reads back what
    /// it holds then, in the same round trip.
    async fn swap(&self, server: &str, held: Option<&(Vec<u8>, u64)>, record: &[u8]) -> Result<Held, Error> {
        let (index, request) = self.swap_request(server, held, record)?;
        let answer = self
            .pool
            .run_one(&Blocking(self), index, request, u64::MAX, true)
            .await?;
        Ok(Ok(answer.surveyed()?.record))
    }

    /// The request that stores `record` on `server` over what it was read
    /// holding (`held`), then reads what it holds: with the server's index.
    fn swap_request(
        &self,
        server: &str,
        held: Option<&(Vec<u8>, u64)>,
        record: &[u8],
    ) -> Result<(usize, Request<'static>), Error> {
        let index = self
            .pool
            .ids
            .iter()
            .position(|id| id == server)
            .ok_or_else(|| Error::Protocol(format!("{server} is not among the servers of the change")))?;
        let write = match held {
            Some((_, cas)) => Own::SwapPool {
                record: record.to_vec(),
                cas: *cas,
            },
            None => Own::AddPool(record.to_vec()),
        };
        let request = Request {
            own: vec![write, Own::SurveyPool, Own::Stats],
            ..Request::default()
        };
        Ok((index, request))
    }

    /// Brings every server of `servers` to `record` (a record of `change`),
    /// swapping what each holds. Fails if one does not answer, or holds a
    /// record the change did not plan from (another change's, made since:
    /// a concurrent `pool set`, forced maybe, that claimed another anchor);
    /// gives up after a few rounds of others writing between.
    async fn converge(
        &self,
        servers: &[String],
        held: &mut BTreeMap<String, Held>,
        record: &[u8],
        change: &Change<'_>,
    ) -> Result<(), Error> {
        let listed = change.listed;
        for _ in 0..4 {
            let waiting: Vec<&String> = servers.iter().filter(|server| !holds(held, server, record)).collect();
            if waiting.is_empty() {
                return Ok(());
            }
            let mut requests = Vec::new();
            for server in &waiting {
                if let Some(Ok(Some((stored, _)))) = held.get(*server)
                    && !change.may_replace(stored)
                {
                    let there = Membership::parse(stored)
                        .map(|there| format!("generation {} of pool {:08x}", there.generation, there.id))
                        .unwrap_or_else(|_| String::from("a record this host cannot read"));
                    return Err(Error::Unavailable(format!(
                        "another `pool set` changed the pool while the change to {listed} was under way (memcached \
                         at {server} holds {there}, which this change did not start from); run `pool show`"
                    )));
                }
                requests.push(self.swap_request(server, held_now(held, server), record)?);
            }
            let answers = self.pool.run_all(&Blocking(self), requests, u64::MAX).await;
            for (server, answer) in waiting.into_iter().zip(answers) {
                let now = answer
                    .and_then(|answer| answer.surveyed())
                    .map(|surveyed| surveyed.record);
                if let Err(error) = &now {
                    return Err(pending(listed, &describe(error)));
                }
                held.insert(server.clone(), now);
            }
        }
        Err(concurrent(listed))
    }
}

/// A change being made: the records it was planned from, its own records
/// (changing and active) and its server list, for messages.
struct Change<'a> {
    planned: &'a [Membership],
    ours: [&'a [u8]; 2],
    listed: &'a str,
}

impl Change<'_> {
    /// Whether a server found holding `stored` may have it swapped for
    /// this change's record: the change's own, or a state of a pool it was
    /// planned from, no later than the one planned from (a server lagging
    /// behind, given back an old record, or still holding the changing
    /// record of a change that committed). Anything else was written
    /// since by another change, which then holds that server: two changes
    /// that claimed different anchors (forced, with different servers out
    /// of reach) are arbitrated by the first server they share.
    fn may_replace(&self, stored: &[u8]) -> bool {
        if self.ours.contains(&stored) {
            return true;
        }
        let Ok(there) = Membership::parse(stored) else {
            return false;
        };
        self.planned
            .iter()
            .any(|pool| pool.id == there.id && !newer(&there, pool))
    }
}

/// `pools` without the records other lists made at first use, and those:
/// when one pool lists exactly `servers` and every other was recorded at
/// first use (and is not being changed), that pool alone; otherwise every
/// pool, and none.
fn without_strays(pools: Vec<Membership>, servers: &[String]) -> (Vec<Membership>, Vec<Membership>) {
    let ours = pools.iter().find(|pool| !pool.changing && pool.lists(servers)).cloned();
    match ours {
        Some(ours)
            if pools
                .iter()
                .all(|pool| pool.id == ours.id || (pool.first_use && !pool.changing)) =>
        {
            let strays = pools.into_iter().filter(|pool| pool.id != ours.id).collect();
            (vec![ours], strays)
        }
        _ => (pools, Vec::new()),
    }
}

/// Keeps `record` in `pools` if it is the newest of its pool.
fn newest_of_its_pool(pools: &mut Vec<Membership>, record: Membership) {
    match pools.iter_mut().find(|pool| pool.id == record.id) {
        Some(pool) if newer(&record, pool) => *pool = record,
        Some(_) => {}
        None => pools.push(record),
    }
}

/// Whether `record` is a later state of the pool than `than`: a later
/// generation, or the same one committed where `than` is still changing.
fn newer(record: &Membership, than: &Membership) -> bool {
    record.generation > than.generation || (record.generation == than.generation && than.changing && !record.changing)
}

/// Whether `server` was last read holding `record`.
fn holds(held: &BTreeMap<String, Held>, server: &str, record: &[u8]) -> bool {
    held.get(server).is_some_and(|held| holds_bytes(held, record))
}

fn holds_bytes(held: &Held, record: &[u8]) -> bool {
    matches!(held, Ok(Some((stored, _))) if stored == record)
}

/// What `server` was last read holding, with its CAS value.
fn held_now<'a>(held: &'a BTreeMap<String, Held>, server: &str) -> Option<&'a (Vec<u8>, u64)> {
    match held.get(server) {
        Some(Ok(Some(record))) => Some(record),
        _ => None,
    }
}

/// What `server` holds, for a message.
fn describe_held(server: &str, held: &Held) -> String {
    match held {
        Ok(Some((stored, _))) => format!("memcached at {server} holds {}", String::from_utf8_lossy(stored)),
        Ok(None) => format!("memcached at {server} holds no record"),
        Err(error) => describe(error),
    }
}

/// Why servers leaving must answer.
const LEAVING: &str = "a server leaving the pool must be reachable to be fenced off; pass --force only if it will \
                       never come back with its contents";

/// `error` (a server that did not answer), with what it means here.
fn unavailable(error: &Error, why: &str) -> Error {
    match error {
        Error::Unavailable(message) => Error::Unavailable(format!("{message}: {why}")),
        other => other.clone(),
    }
}

/// Another change got there first; this one wrote nothing.
fn concurrent(listed: &str) -> Error {
    Error::Unavailable(format!(
        "another `pool set` changed the pool at the same time, so the change to {listed} was not made; run `pool \
         show`, then retry"
    ))
}

/// The change began and did not finish.
fn pending(listed: &str, why: &str) -> Error {
    Error::Unavailable(format!(
        "the change to {listed} is under way but did not finish ({why}): every process refuses the pool until \
         `tenant-cache --memcached {listed} pool set` is run again to complete it"
    ))
}
