//! Every batch under the pool record: its keys carry their route's tag,
//! and it ends by reading `tc:pool`, so a process whose server list or
//! record is not the pool's finds out in the same round trip, before it
//! trusts what it read. Written once, as async code over a [`Driver`]:
//! the blocking driver's futures complete when first polled.

use std::sync::Arc;

use super::protocol::{Answer, Group, Own, OwnReply, Request, describe};
use super::{Driver, Known, MemcachedPool};
use crate::backend::membership::{Membership, Tag, sorted};
use crate::backend::routing::{self, Route};
use crate::bindings::capability::{Command, Error, Outcome, Replies};

/// What one server holds as the pool record, for `tenant-cache pool show`.
#[derive(Debug)]
pub struct PoolReport {
    /// The server, as listed.
    pub server: String,
    /// Its record, as text (`None` if it holds none), or why it could not
    /// be read.
    pub record: Result<Option<String>, String>,
}

/// What a server holds: its pool record, and how many items it holds now
/// and has stored since it started.
struct Surveyed {
    record: Option<Vec<u8>>,
    current: u64,
    total: u64,
}

/// `prefix` with `tag` appended: the key prefix of a route's commands.
fn tagged(prefix: &str, tag: Tag) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(prefix.len() + crate::backend::membership::MAX_TAG);
    tagged.extend_from_slice(prefix.as_bytes());
    tag.write(&mut tagged);
    tagged
}

/// The pool record an answer ends with (the last of its own replies).
fn closing_record(answer: &Answer) -> Option<&[u8]> {
    answer.own.iter().rev().find_map(|reply| match reply {
        OwnReply::Pool(record) => Some(record.as_deref()),
        _ => None,
    })?
}

/// How many stores of a batch took effect: items it may have added.
fn stores_done(replies: &Replies) -> u64 {
    replies
        .outcomes
        .iter()
        .filter(|outcome| **outcome == Outcome::Done)
        .count() as u64
}

impl MemcachedPool {
    /// Runs `commands` (keys relative to `prefix`) on the server that owns
    /// `route`, under the pool record.
    pub(crate) async fn execute_with<D: Driver>(
        &self,
        driver: &D,
        prefix: &str,
        route: &[u8],
        commands: &[Command],
        reply_bytes: u64,
    ) -> Result<Replies, Error> {
        let route = Route::new(route);
        let server = routing::owner(route, &self.ids);
        let owner = &self.ids[server];
        crate::observe::server(owner);
        let mut known = self.known();
        // The second attempt runs only if the record moved the route's keys
        // while the first ran.
        for _ in 0..2 {
            let tag = known
                .as_ref()
                .map_or(Tag::UNRECORDED, |known| known.record.tag(route, owner));
            let batch = Request {
                groups: vec![Group {
                    prefix: tagged(prefix, tag),
                    commands,
                }],
                own: vec![Own::ReadPool],
                ..Request::default()
            };
            let writes = batch.writes();
            let Some(current) = &known else {
                // No record known yet: the batch carries the survey of every
                // server with it, in the same round trip.
                let (replies, survey) = self.run_with_survey(driver, server, batch, reply_bytes).await?;
                let stores = stores_done(&replies);
                let learned = self.conclude(driver, survey, Some((server, stores))).await?;
                if learned.record.tag(route, owner) == tag {
                    return Ok(replies);
                }
                known = Some(learned);
                continue;
            };
            let answer = self.run_one(driver, server, batch, reply_bytes, writes).await?;
            if closing_record(&answer) == Some(&current.stored[..]) {
                return Ok(answer.replies);
            }
            // Not the record the keys were tagged under: find the pool's,
            // and keep the answer if it tags the route the same.
            tracing::info!(server = %owner, "the pool record changed: reading every server's");
            let learned = self.learn(driver).await?;
            if learned.record.tag(route, owner) == tag {
                return Ok(answer.replies);
            }
            known = Some(learned);
        }
        Err(Error::Unavailable(format!(
            "the pool record of memcached at {} kept changing during one call; retry",
            self.ids.join(",")
        )))
    }

    /// Runs `commands` on every server, under every tag a route can have
    /// there: what they write is seen by every route of the application.
    pub(crate) async fn broadcast_with<D: Driver>(
        &self,
        driver: &D,
        prefix: &str,
        commands: &[Command],
    ) -> Result<(), Error> {
        let mut known = match self.known() {
            Some(known) => known,
            None => self.learn(driver).await?,
        };
        for _ in 0..2 {
            let requests: Vec<(usize, Request<'_>)> = (0..self.servers.len())
                .map(|server| {
                    let groups = known
                        .record
                        .tags_of(&self.ids[server])
                        .into_iter()
                        .map(|tag| Group {
                            prefix: tagged(prefix, tag),
                            commands,
                        })
                        .collect();
                    let request = Request {
                        groups,
                        own: vec![Own::ReadPool],
                        ..Request::default()
                    };
                    (server, request)
                })
                .collect();
            let answers = self.run_all(driver, requests, u64::MAX).await;
            let mut current = true;
            for answer in &answers {
                let answer = answer.as_ref().map_err(Clone::clone)?;
                current &= closing_record(answer) == Some(&known.stored[..]);
            }
            if current {
                for answer in answers.into_iter().flatten() {
                    if let Some(Outcome::Failed(error)) = answer
                        .replies
                        .outcomes
                        .into_iter()
                        .find(|outcome| matches!(outcome, Outcome::Failed(_)))
                    {
                        return Err(error);
                    }
                }
                return Ok(());
            }
            known = self.learn(driver).await?;
        }
        Err(Error::Unavailable(format!(
            "the pool record of memcached at {} kept changing during one call; retry",
            self.ids.join(",")
        )))
    }

    /// Runs one request and maps a failed exchange to the capability's error.
    async fn run_one<D: Driver>(
        &self,
        driver: &D,
        server: usize,
        request: Request<'_>,
        reply_bytes: u64,
        writes: bool,
    ) -> Result<Answer, Error> {
        let mut results = driver.run(self, vec![(server, request)], reply_bytes).await;
        match results.pop() {
            Some(result) => result.map_err(|failure| self.error(server, failure, writes)),
            None => Err(Error::Protocol(String::from("the driver ran no request"))),
        }
    }

    /// Runs requests on several servers at once; each failed exchange
    /// becomes its server's error.
    async fn run_all<D: Driver>(
        &self,
        driver: &D,
        requests: Vec<(usize, Request<'_>)>,
        reply_bytes: u64,
    ) -> Vec<Result<Answer, Error>> {
        let targets: Vec<(usize, bool)> = requests
            .iter()
            .map(|(server, request)| (*server, request.writes()))
            .collect();
        let results = driver.run(self, requests, reply_bytes).await;
        results
            .into_iter()
            .zip(targets)
            .map(|(result, (server, writes))| result.map_err(|failure| self.error(server, failure, writes)))
            .collect()
    }

    /// Reads the pool record (and item counts) of every listed server.
    async fn survey<D: Driver>(&self, driver: &D) -> Vec<Result<Surveyed, Error>> {
        let requests = (0..self.servers.len())
            .map(|server| (server, Request::default()))
            .collect();
        self.run_surveyed(driver, requests, u64::MAX)
            .await
            .into_iter()
            .map(|result| result.map(|(_, surveyed)| surveyed))
            .collect()
    }

    /// Runs `batch` on `server` with a survey of every server in the same
    /// round trip: the batch's replies and the survey.
    async fn run_with_survey<D: Driver>(
        &self,
        driver: &D,
        server: usize,
        batch: Request<'_>,
        reply_bytes: u64,
    ) -> Result<(Replies, Vec<Result<Surveyed, Error>>), Error> {
        let mut batch = Some(batch);
        let requests = (0..self.servers.len())
            .map(|index| match index == server {
                true => (index, batch.take().unwrap_or_default()),
                false => (index, Request::default()),
            })
            .collect();
        let mut replies = None;
        let mut survey = Vec::with_capacity(self.servers.len());
        for (index, result) in self
            .run_surveyed(driver, requests, reply_bytes)
            .await
            .into_iter()
            .enumerate()
        {
            survey.push(match result {
                Ok((answer, surveyed)) => {
                    if index == server {
                        replies = Some(answer);
                    }
                    Ok(surveyed)
                }
                // The batch itself failed: that is the call's error.
                Err(error) if index == server => return Err(error),
                Err(error) => Err(error),
            });
        }
        let replies = replies.ok_or_else(|| Error::Protocol(String::from("the driver ran no batch")))?;
        Ok((replies, survey))
    }

    /// Runs requests with the pool record and item counts read after each:
    /// each server's replies and what it holds.
    async fn run_surveyed<D: Driver>(
        &self,
        driver: &D,
        mut requests: Vec<(usize, Request<'_>)>,
        reply_bytes: u64,
    ) -> Vec<Result<(Replies, Surveyed), Error>> {
        for (_, request) in &mut requests {
            request.own.extend([Own::ReadPool, Own::Stats]);
        }
        self.run_all(driver, requests, reply_bytes)
            .await
            .into_iter()
            .map(|answer| {
                let answer = answer?;
                match answer.own.as_slice() {
                    [.., OwnReply::Pool(record), OwnReply::Stats { current, total }] => {
                        let surveyed = Surveyed {
                            record: record.clone(),
                            current: *current,
                            total: *total,
                        };
                        Ok((answer.replies, surveyed))
                    }
                    _ => Err(Error::Protocol(String::from(
                        "memcached answered a survey out of shape",
                    ))),
                }
            })
            .collect()
    }

    /// Finds the pool record on the servers and remembers it: records it on
    /// servers that lost theirs, or records a new pool when no server holds
    /// one.
    async fn learn<D: Driver>(&self, driver: &D) -> Result<Arc<Known>, Error> {
        let survey = self.survey(driver).await;
        self.conclude(driver, survey, None).await
    }

    /// [`learn`](Self::learn) from a survey taken. `speculative`: a server
    /// ran a batch before any record was known, and how many of its stores
    /// took effect (they do not make the server non-empty).
    async fn conclude<D: Driver>(
        &self,
        driver: &D,
        survey: Vec<Result<Surveyed, Error>>,
        speculative: Option<(usize, u64)>,
    ) -> Result<Arc<Known>, Error> {
        let mut records = Vec::new();
        let mut empty = true;
        let mut unreachable = None;
        for (server, result) in survey.iter().enumerate() {
            let address = &self.ids[server];
            match result {
                Ok(Surveyed {
                    record: Some(stored), ..
                }) => match Membership::parse(stored) {
                    Ok(record) => records.push((server, record)),
                    Err(why) => {
                        return Err(Error::Protocol(format!(
                            "memcached at {address} holds a `tc:pool` record this host cannot read ({why}): it \
                             belongs to another tool or a newer tenant-cache; use other servers, or delete the key"
                        )));
                    }
                },
                Ok(Surveyed {
                    record: None,
                    current,
                    total,
                }) => {
                    let ours = speculative
                        .filter(|(at, _)| *at == server)
                        .map_or(0, |(_, stores)| stores);
                    empty &= *current <= ours && *total <= ours;
                }
                Err(error) => unreachable = unreachable.or(Some(error.clone())),
            }
        }
        let Some((_, newest)) = records.iter().max_by_key(|(_, record)| record.generation) else {
            if let Some(error) = unreachable {
                return Err(error);
            }
            return self.record_new_pool(driver, empty).await;
        };
        let newest = newest.clone();
        if let Some((server, _)) = records.iter().find(|(_, record)| record.id != newest.id) {
            return Err(Error::Unavailable(format!(
                "memcached at {} holds the record of another pool than the rest of {}: make one pool of them with \
                 `tenant-cache --memcached {} pool set`",
                self.ids[*server],
                self.ids.join(","),
                self.ids.join(",")
            )));
        }
        if records.iter().any(|(_, record)| record.changing) {
            return Err(Error::Unavailable(format!(
                "the pool of memcached at {} is being changed by `tenant-cache pool set`; retry once it completes \
                 (run it again if it was interrupted)",
                self.ids.join(",")
            )));
        }
        if !newest.lists(&self.ids) {
            return Err(self.wrong_list(&newest));
        }
        // Servers that lost their record (a restart, an eviction) or hold
        // an older one get the pool's.
        let stored = newest.encode();
        let repairs: Vec<(usize, Request<'_>)> = survey
            .iter()
            .enumerate()
            .filter_map(|(server, result)| match result {
                Ok(Surveyed { record: None, .. }) => Some((server, Own::AddPool(stored.clone()))),
                Ok(Surveyed {
                    record: Some(record), ..
                }) if *record != stored => Some((server, Own::SetPool(stored.clone()))),
                _ => None,
            })
            .map(|(server, own)| {
                let request = Request {
                    own: vec![own],
                    ..Request::default()
                };
                (server, request)
            })
            .collect();
        if !repairs.is_empty() {
            // A repair that fails is done by the next process to look.
            let _ = self.run_all(driver, repairs, u64::MAX).await;
        }
        Ok(self.remember(newest))
    }

    /// Records a new pool of the listed servers, none of which holds a
    /// record: on the first server (sorted) first, so that processes doing
    /// this at once agree on one record, then on the others.
    async fn record_new_pool<D: Driver>(&self, driver: &D, empty: bool) -> Result<Arc<Known>, Error> {
        let proposal = Membership::first(&self.ids, rand::random(), empty).encode();
        let seed = (0..self.ids.len()).min_by_key(|&server| &self.ids[server]).unwrap_or(0);
        let record = |answer: Answer| closing_record(&answer).map(<[u8]>::to_vec);
        let request = Request {
            own: vec![Own::AddPool(proposal), Own::ReadPool],
            ..Request::default()
        };
        let chosen = record(self.run_one(driver, seed, request, u64::MAX, true).await?)
            .ok_or_else(|| Error::Protocol(format!("memcached at {} did not keep the pool record", self.ids[seed])))?;
        let others: Vec<(usize, Request<'_>)> = (0..self.ids.len())
            .filter(|&server| server != seed)
            .map(|server| {
                let request = Request {
                    own: vec![Own::AddPool(chosen.clone()), Own::ReadPool],
                    ..Request::default()
                };
                (server, request)
            })
            .collect();
        for (index, answer) in self.run_all(driver, others, u64::MAX).await.into_iter().enumerate() {
            if record(answer?).as_deref() != Some(&chosen[..]) {
                return Err(Error::Unavailable(format!(
                    "the servers of memcached at {} were recorded as different pools at once (the {}th disagrees); \
                     retry",
                    self.ids.join(","),
                    index + 2
                )));
            }
        }
        let record = Membership::parse(&chosen).map_err(Error::Protocol)?;
        Ok(self.remember(record))
    }

    /// The error for a process whose server list is not the pool's.
    fn wrong_list(&self, record: &Membership) -> Error {
        let listed = self.ids.join(",");
        let mut message = format!(
            "memcached at {listed} is a pool of {} (generation {}), but this process lists {listed}",
            record.servers().join(","),
            record.generation
        );
        for server in &self.ids {
            if record.has_departed(server) {
                message.push_str(&format!(
                    "; {server} left the pool and may hold entries its clears never reached"
                ));
            }
        }
        message.push_str(&format!(
            ": list the pool's servers, or make this list the pool with `tenant-cache --memcached {listed} pool \
             set` (tenants whose server changes start empty)"
        ));
        Error::Unavailable(message)
    }

    /// What every listed server holds as the pool record.
    pub(crate) async fn report_with<D: Driver>(&self, driver: &D) -> Vec<PoolReport> {
        self.survey(driver)
            .await
            .into_iter()
            .zip(&self.ids)
            .map(|(result, server)| PoolReport {
                server: server.clone(),
                record: result
                    .map(|surveyed| {
                        surveyed
                            .record
                            .map(|stored| String::from_utf8_lossy(&stored).into_owned())
                    })
                    .map_err(|error| describe(&error)),
            })
            .collect()
    }

    /// Makes the listed servers the pool: in two phases over every server
    /// of the old and the new list, so that no process can use the old
    /// record once any uses the new one. Servers leaving the pool must be
    /// reachable (they are fenced), unless `force`.
    pub(crate) async fn set_membership_with<D: Driver>(&self, driver: &D, force: bool) -> Result<Membership, Error> {
        let survey = self.survey(driver).await;
        let mut newest: Option<Membership> = None;
        let mut consistent = true;
        for (server, result) in survey.iter().enumerate() {
            match result {
                Err(error) => {
                    return Err(match error {
                        Error::Unavailable(message) => Error::Unavailable(format!(
                            "{message}: every server of the new pool must be reachable to join it"
                        )),
                        other => other.clone(),
                    });
                }
                Ok(Surveyed {
                    record: Some(stored), ..
                }) => {
                    let record = Membership::parse(stored).map_err(|why| {
                        Error::Protocol(format!(
                            "memcached at {} holds a `tc:pool` record this host cannot read ({why})",
                            self.ids[server]
                        ))
                    })?;
                    consistent &= newest.as_ref().is_none_or(|newest| newest.id == record.id);
                    if newest
                        .as_ref()
                        .is_none_or(|newest| record.generation > newest.generation)
                    {
                        newest = Some(record);
                    }
                }
                Ok(Surveyed { record: None, .. }) => {}
            }
        }
        let Some(current) = newest else {
            let empty = survey.iter().all(|result| {
                matches!(
                    result,
                    Ok(Surveyed {
                        record: None,
                        current: 0,
                        total: 0
                    })
                )
            });
            return self
                .record_new_pool(driver, empty)
                .await
                .map(|known| known.record.clone());
        };
        let mut target = if consistent {
            current.next(&self.ids).map_err(Error::Protocol)?
        } else {
            // Records of different pools: start over, every route tagged
            // anew, so nothing any of them kept is read.
            let mut fresh = Membership::first(&self.ids, rand::random(), false);
            fresh.generation = current.generation + 1;
            fresh.floor = fresh.generation;
            fresh
                .members
                .iter_mut()
                .for_each(|(_, joined)| *joined = fresh.generation);
            fresh
        };
        if current.lists(&self.ids) && !current.changing && consistent {
            return Ok(current);
        }
        // Every server of the old and the new list, the old ones reached
        // through a pool of their own; all must answer before anything is
        // written, those leaving only unless `force`.
        let everyone = sorted(&[current.servers(), self.ids.clone()].concat());
        let all = MemcachedPool::new(&everyone, self.options.clone())
            .map_err(|error| Error::Unavailable(format!("{error:#}")))?;
        let mut reached = Vec::new();
        for (server, result) in all.survey(driver).await.into_iter().enumerate() {
            match result {
                Ok(_) => reached.push(server),
                Err(_) if force && !self.ids.contains(&everyone[server]) => {}
                Err(error) if !self.ids.contains(&everyone[server]) => {
                    return Err(Error::Unavailable(format!(
                        "{}: a server leaving the pool must be reachable to be fenced off; pass --force only if \
                         it will never come back with its contents",
                        describe(&error)
                    )));
                }
                Err(error) => return Err(error),
            }
        }
        target.changing = true;
        let changing = target.clone();
        target.changing = false;
        for record in [&changing, &target] {
            let requests = reached
                .iter()
                .map(|&server| {
                    let request = Request {
                        own: vec![Own::SetPool(record.encode())],
                        ..Request::default()
                    };
                    (server, request)
                })
                .collect();
            for result in all.run_all(driver, requests, u64::MAX).await {
                // A failure here leaves the pool changing: every process
                // refuses it until this step is run again.
                result?;
            }
        }
        Ok(self.remember(target).record.clone())
    }
}
