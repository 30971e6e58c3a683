//! Every batch under the pool record: its keys carry their route's tag,
//! and it ends by reading `tc:pool`, so a process whose server list or
//! record is not the pool's finds out in the same round trip, before it
//! trusts what it read. A process uses a record only if every server of
//! its list that answers holds exactly that record, and it lists exactly
//! those servers. Written once, as async code over a [`Driver`]: the
//! blocking driver's futures complete when first polled. How the record
//! changes: `pool_change`.

use std::sync::Arc;

use super::protocol::{Answer, Group, Own, OwnReply, Request, describe};
use super::{Driver, Known, MemcachedPool};
use crate::backend::membership::{Membership, Tag};
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

/// What a server holds: its pool record with its CAS value, and how many
/// items it holds now and has stored since it started.
pub(super) struct Surveyed {
    pub(super) record: Option<(Vec<u8>, u64)>,
    pub(super) current: u64,
    pub(super) total: u64,
}

/// The pool record a process found, and the listed servers that held none
/// and were given it back.
pub(super) struct Learned {
    known: Arc<Known>,
    restored: Vec<usize>,
}

impl Learned {
    /// Whether a batch that ended by reading `closing` on `server` ran
    /// under this record: the server held it, or held none and was given
    /// it back while no change of the pool could have begun.
    fn vouches_for(&self, server: usize, closing: Option<&[u8]>) -> bool {
        match closing {
            Some(closing) => closing == self.known.stored,
            None => self.restored.contains(&server),
        }
    }
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
        OwnReply::Surveyed(record) => Some(record.as_ref().map(|(stored, _)| &stored[..])),
        _ => None,
    })?
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
        let writes = commands.iter().any(|command| !matches!(command, Command::Get(_)));
        if known.is_none() && writes {
            // A process that knows no record yet learns it before it
            // writes: a list that is not the pool's writes nothing.
            known = Some(self.learn(driver).await?.known);
        }
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
            let (replies, closing, learned) = match &known {
                None => {
                    // No record known yet, and the batch only reads: it
                    // carries the survey of every server with it, in the
                    // same round trip.
                    let (answer, survey) = self.run_with_survey(driver, server, batch, reply_bytes).await?;
                    let closing = closing_record(&answer).map(<[u8]>::to_vec);
                    (answer.replies, closing, self.conclude(driver, survey).await?)
                }
                Some(current) => {
                    let answer = self.run_one(driver, server, batch, reply_bytes, writes).await?;
                    let closing = closing_record(&answer);
                    if closing == Some(&current.stored[..]) {
                        return Ok(answer.replies);
                    }
                    // Not the record the keys were tagged under: find the
                    // pool's, and keep the answer if it tags the route the same.
                    tracing::info!(server = %owner, "the pool record changed: reading every server's");
                    let closing = closing.map(<[u8]>::to_vec);
                    (answer.replies, closing, self.learn(driver).await?)
                }
            };
            if learned.vouches_for(server, closing.as_deref()) && learned.known.record.tag(route, owner) == tag {
                return Ok(replies);
            }
            if closing.is_none() && !learned.vouches_for(server, None) {
                return Err(self.unrecorded(server, &learned.known.record));
            }
            known = Some(learned.known);
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
            None => self.learn(driver).await?.known,
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
            known = self.learn(driver).await?.known;
        }
        Err(Error::Unavailable(format!(
            "the pool record of memcached at {} kept changing during one call; retry",
            self.ids.join(",")
        )))
    }

    /// Runs one request and maps a failed exchange to the capability's error.
    pub(super) async fn run_one<D: Driver>(
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
    pub(super) async fn run_all<D: Driver>(
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

    /// Reads the pool record, its CAS value and the item counts of every
    /// listed server.
    pub(super) async fn survey<D: Driver>(&self, driver: &D) -> Vec<Result<Surveyed, Error>> {
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
    /// round trip: the batch's answer and the survey.
    async fn run_with_survey<D: Driver>(
        &self,
        driver: &D,
        server: usize,
        batch: Request<'_>,
        reply_bytes: u64,
    ) -> Result<(Answer, Vec<Result<Surveyed, Error>>), Error> {
        let mut batch = Some(batch);
        let mut requests: Vec<(usize, Request<'_>)> = (0..self.servers.len())
            .map(|index| match index == server {
                true => (index, batch.take().unwrap_or_default()),
                false => (index, Request::default()),
            })
            .collect();
        for (_, request) in &mut requests {
            request.own.extend([Own::SurveyPool, Own::Stats]);
        }
        let mut answer = None;
        let mut survey = Vec::with_capacity(self.servers.len());
        for (index, result) in self
            .run_all(driver, requests, reply_bytes)
            .await
            .into_iter()
            .enumerate()
        {
            match result {
                Ok(reply) => {
                    survey.push(surveyed(&reply));
                    if index == server {
                        answer = Some(reply);
                    }
                }
                // The batch itself failed: that is the call's error.
                Err(error) if index == server => return Err(error),
                Err(error) => survey.push(Err(error)),
            }
        }
        let answer = answer.ok_or_else(|| Error::Protocol(String::from("the driver ran no batch")))?;
        Ok((answer, survey))
    }

    /// Runs requests with the pool record (and its CAS value) and item
    /// counts read after each: each server's replies and what it holds.
    async fn run_surveyed<D: Driver>(
        &self,
        driver: &D,
        mut requests: Vec<(usize, Request<'_>)>,
        reply_bytes: u64,
    ) -> Vec<Result<(Replies, Surveyed), Error>> {
        for (_, request) in &mut requests {
            request.own.extend([Own::SurveyPool, Own::Stats]);
        }
        self.run_all(driver, requests, reply_bytes)
            .await
            .into_iter()
            .map(|answer| {
                let answer = answer?;
                let surveyed = surveyed(&answer)?;
                Ok((answer.replies, surveyed))
            })
            .collect()
    }

    /// Finds the pool record on the servers and remembers it (see
    /// [`conclude`](Self::conclude)).
    pub(super) async fn learn<D: Driver>(&self, driver: &D) -> Result<Learned, Error> {
        let survey = self.survey(driver).await;
        self.conclude(driver, survey).await
    }

    /// The pool record the survey shows, remembered: every listed server
    /// that answers holds exactly one record, active, that lists exactly
    /// this process's servers. Servers that hold none (restarted, or it was
    /// evicted) get it back; when no server holds one, the pool is recorded.
    async fn conclude<D: Driver>(&self, driver: &D, survey: Vec<Result<Surveyed, Error>>) -> Result<Learned, Error> {
        let mut records: Vec<(usize, Membership, &[u8])> = Vec::new();
        let mut missing = Vec::new();
        let mut empty = true;
        let mut unreachable = None;
        for (server, result) in survey.iter().enumerate() {
            match result {
                Ok(Surveyed {
                    record: Some((stored, _)),
                    ..
                }) => records.push((server, self.parse_record(server, stored)?, stored)),
                Ok(Surveyed {
                    record: None,
                    current,
                    total,
                }) => {
                    missing.push(server);
                    empty &= *current == 0 && *total == 0;
                }
                Err(error) => unreachable = unreachable.or(Some((server, error.clone()))),
            }
        }
        let Some((newest_at, newest, stored)) = records.iter().max_by_key(|(_, record, _)| record.generation) else {
            if let Some((_, error)) = unreachable {
                return Err(error);
            }
            return self.record_new_pool(driver, empty).await;
        };
        if let Some((server, _, _)) = records.iter().find(|(_, record, _)| record.id != newest.id) {
            return Err(Error::Unavailable(format!(
                "memcached at {} holds the record of another pool than the rest of {}: make one pool of them with \
                 `tenant-cache --memcached {} pool set`",
                self.ids[*server],
                self.ids.join(","),
                self.ids.join(",")
            )));
        }
        if let Some((_, changing, _)) = records.iter().find(|(_, record, _)| record.changing) {
            let target = changing.servers().join(",");
            return Err(Error::Unavailable(format!(
                "the pool of memcached at {} is being changed to {target} by `tenant-cache pool set`; retry once \
                 it completes, or if it was interrupted, complete it with `tenant-cache --memcached {target} pool \
                 set`",
                self.ids.join(",")
            )));
        }
        if !newest.lists(&self.ids) {
            return Err(self.wrong_list(newest));
        }
        if let Some((server, record, _)) = records.iter().find(|(_, _, other)| other != stored) {
            return Err(Error::Unavailable(format!(
                "memcached at {} holds generation {} of the pool while memcached at {} holds generation {}: bring \
                 them together with `tenant-cache --memcached {} pool set`",
                self.ids[*server],
                record.generation,
                self.ids[*newest_at],
                newest.generation,
                self.ids.join(",")
            )));
        }
        let (newest, stored) = (newest.clone(), stored.to_vec());
        let anchor = self.ids.iter().position(|server| server == newest.anchor());
        let anchor_answers = anchor.is_some_and(|anchor| survey[anchor].is_ok());
        let restored = match missing.is_empty() || !anchor_answers {
            // Without the anchor no server is given the record back: only
            // the anchor tells that no change has begun meanwhile.
            true => Vec::new(),
            false => self.restore(driver, &newest, &stored, missing).await?,
        };
        Ok(Learned {
            known: self.remember(newest),
            restored,
        })
    }

    /// Gives `record` (stored as `stored`) back to the `missing` servers,
    /// only where they still hold none, and keeps it there only if the
    /// pool's anchor still holds it afterwards: a change of the pool claims
    /// the anchor before it writes anywhere else, so then none began
    /// before the record was given back, and any that begins later will
    /// replace it like every other server's.
    async fn restore<D: Driver>(
        &self,
        driver: &D,
        record: &Membership,
        stored: &[u8],
        missing: Vec<usize>,
    ) -> Result<Vec<usize>, Error> {
        let requests = missing
            .iter()
            .map(|&server| {
                let request = Request {
                    own: vec![Own::AddPool(stored.to_vec()), Own::ReadPool],
                    ..Request::default()
                };
                (server, request)
            })
            .collect();
        let mut added = Vec::new();
        let mut raced = false;
        for (&server, result) in missing.iter().zip(self.run_all(driver, requests, u64::MAX).await) {
            let answer = result?;
            match answer.own.first() {
                Some(OwnReply::Stored(Some(cas))) => added.push((server, *cas)),
                // Another process gave it the same record first.
                _ if closing_record(&answer) == Some(stored) => {}
                _ => raced = true,
            }
        }
        let anchor = self
            .ids
            .iter()
            .position(|server| server == record.anchor())
            .unwrap_or(0);
        let check = Request {
            own: vec![Own::ReadPool],
            ..Request::default()
        };
        let anchor_holds = match self.run_one(driver, anchor, check, u64::MAX, false).await {
            Ok(answer) => closing_record(&answer) == Some(stored),
            Err(_) => false,
        };
        if raced || !anchor_holds {
            let undo = added
                .iter()
                .map(|&(server, cas)| {
                    let request = Request {
                        own: vec![Own::RemovePool { cas }],
                        ..Request::default()
                    };
                    (server, request)
                })
                .collect();
            // An undo that fails leaves a record a change replaces anyway.
            let _ = self.run_all(driver, undo, u64::MAX).await;
            return Err(Error::Unavailable(format!(
                "the pool record of memcached at {} changed while this process gave it back to a server that had \
                 lost it; retry",
                self.ids.join(",")
            )));
        }
        Ok(missing)
    }

    /// Records a new pool of the listed servers, none of which holds a
    /// record: on the first server (sorted) first, so that processes doing
    /// this at once agree on one record, then on the others. A process
    /// whose list is not the one recorded first writes nothing more and
    /// fails; one that finds another record on a later server takes back
    /// what it wrote and fails.
    async fn record_new_pool<D: Driver>(&self, driver: &D, empty: bool) -> Result<Learned, Error> {
        let proposal = Membership::first(&self.ids, rand::random(), empty).encode();
        let seed = (0..self.ids.len()).min_by_key(|&server| &self.ids[server]).unwrap_or(0);
        let request = Request {
            own: vec![Own::AddPool(proposal), Own::ReadPool],
            ..Request::default()
        };
        let answer = self.run_one(driver, seed, request, u64::MAX, true).await?;
        let mut added: Vec<(usize, u64)> = match answer.own.first() {
            Some(OwnReply::Stored(Some(cas))) => vec![(seed, *cas)],
            _ => Vec::new(),
        };
        let chosen = closing_record(&answer)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Protocol(format!("memcached at {} did not keep the pool record", self.ids[seed])))?;
        let record = self.parse_record(seed, &chosen)?;
        if !record.lists(&self.ids) {
            return Err(self.wrong_list(&record));
        }
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
        let targets: Vec<usize> = others.iter().map(|(server, _)| *server).collect();
        let mut disagree = None;
        for (server, answer) in targets.into_iter().zip(self.run_all(driver, others, u64::MAX).await) {
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    disagree = disagree.or(Some(describe(&error)));
                    continue;
                }
            };
            if let Some(OwnReply::Stored(Some(cas))) = answer.own.first() {
                added.push((server, *cas));
            }
            if closing_record(&answer) != Some(&chosen[..]) {
                disagree = disagree.or(Some(format!("memcached at {} holds another record", self.ids[server])));
            }
        }
        if let Some(why) = disagree {
            let undo = added
                .into_iter()
                .map(|(server, cas)| {
                    let request = Request {
                        own: vec![Own::RemovePool { cas }],
                        ..Request::default()
                    };
                    (server, request)
                })
                .collect();
            let _ = self.run_all(driver, undo, u64::MAX).await;
            return Err(Error::Unavailable(format!(
                "the servers of memcached at {} could not be recorded as one pool ({why}); retry",
                self.ids.join(",")
            )));
        }
        Ok(Learned {
            known: self.remember(record),
            restored: (0..self.ids.len()).collect(),
        })
    }

    /// Reads the record `stored` that `server` holds.
    pub(super) fn parse_record(&self, server: usize, stored: &[u8]) -> Result<Membership, Error> {
        Membership::parse(stored).map_err(|why| {
            Error::Protocol(format!(
                "memcached at {} holds a `tc:pool` record this host cannot read ({why}): it belongs to another tool \
                 or a newer tenant-cache; use other servers, or delete the key",
                self.ids[server]
            ))
        })
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

    /// The error for a batch on a server that holds no record and could not
    /// be given it back.
    fn unrecorded(&self, server: usize, record: &Membership) -> Error {
        Error::Unavailable(format!(
            "memcached at {} holds no pool record (it restarted, or evicted it), and it is given the record back \
             only while the pool's first server, {}, answers; retry once it does",
            self.ids[server],
            record.anchor()
        ))
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
                            .map(|(stored, _)| String::from_utf8_lossy(&stored).into_owned())
                    })
                    .map_err(|error| describe(&error)),
            })
            .collect()
    }
}

/// What an answer that ends with a survey says the server holds.
pub(super) fn surveyed(answer: &Answer) -> Result<Surveyed, Error> {
    match answer.own.as_slice() {
        [.., OwnReply::Surveyed(record), OwnReply::Stats { current, total }] => Ok(Surveyed {
            record: record.clone(),
            current: *current,
            total: *total,
        }),
        _ => Err(Error::Protocol(String::from(
            "memcached answered a survey out of shape",
        ))),
    }
}
