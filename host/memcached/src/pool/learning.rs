//! How a process learns the pool record: it reads every listed server's
//! (a survey), and uses a record only if every server of its list that
//! answers holds exactly that record, active, and it lists exactly those
//! servers. A server that lost its record gets it back while the pool's
//! anchor confirms no change began; when no server holds one, the pool is
//! recorded. `pool show` prints the survey.

use std::sync::Arc;

use super::{Driver, Known, Pool};
use crate::membership::Membership;
use crate::protocol::{Own, OwnReply, Request, Surveyed, describe};
use crate::types::{Error, Replies};

/// What one server holds as the pool record, for `tenant-cache pool show`.
#[derive(Debug)]
pub struct PoolReport {
    /// The server, as listed.
    pub server: String,
    /// Its record, as text (`None` if it holds none), or why it could not
    /// be read.
    pub record: Result<Option<String>, String>,
}

/// The pool record a process found, the listed servers that held none (or
/// a stray, see [`strays`]) and were given it back, the strays seen, and
/// whether the survey tells that no change of the pool can have begun.
pub struct Learned {
    pub known: Arc<Known>,
    restored: Vec<usize>,
    strays: Vec<Vec<u8>>,
    /// The pool's anchor answered holding the record, or every listed
    /// server answered and none holds another record of the pool: a change
    /// claims the anchor first and converts every server before it
    /// commits, so none has begun.
    unchanged: bool,
}

impl Learned {
    /// Whether a batch that ended by reading `closing` found no record of
    /// this pool there: none, or a stray.
    pub fn unrecorded_at(&self, closing: Option<&[u8]>) -> bool {
        closing.is_none_or(|closing| self.strays.iter().any(|stray| stray == closing))
    }

    /// Whether a batch that ended by reading `closing` on `server` ran
    /// under this record: the server held it; or it held none (restarted)
    /// or a stray, and was given the record back, or no change of the pool
    /// can have begun since (a batch on an emptied server under the pool's
    /// tag reads nothing from before, and what it writes is the pool's).
    pub fn vouches_for(&self, server: usize, closing: Option<&[u8]>) -> bool {
        let excused = self.restored.contains(&server) || self.unchanged;
        match closing {
            Some(closing) if closing == self.known.stored => true,
            Some(_) => excused && self.unrecorded_at(closing),
            None => excused,
        }
    }
}

impl Pool {
    /// Reads the pool record, its CAS value and the item counts of every
    /// listed server.
    pub async fn survey<D: Driver>(&self, driver: &D) -> Vec<Result<Surveyed, Error>> {
        let requests = (0..self.ids.len()).map(|server| (server, Request::default())).collect();
        self.run_surveyed(driver, requests, u64::MAX)
            .await
            .into_iter()
            .map(|result| result.map(|(_, surveyed)| surveyed))
            .collect()
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
                let surveyed = answer.surveyed()?;
                Ok((answer.replies, surveyed))
            })
            .collect()
    }

    /// Finds the pool record on the servers and remembers it (see
    /// [`conclude`](Self::conclude)); for a batch that writes (`writes`),
    /// when no server holds one, records the pool. `None`: no server holds
    /// one, and nothing was written.
    pub async fn learn<D: Driver>(&self, driver: &D, writes: bool) -> Result<Option<Learned>, Error> {
        let survey = self.survey(driver).await;
        self.conclude(driver, survey, writes).await
    }

    /// [`learn`](Self::learn) before a batch that writes: a record, found
    /// or made.
    pub async fn learn_to_write<D: Driver>(&self, driver: &D) -> Result<Learned, Error> {
        self.learn(driver, true)
            .await?
            .ok_or_else(|| Error::Protocol(String::from("no pool record was found or made")))
    }

    /// The pool record the survey shows, remembered: every listed server
    /// that answers holds exactly one record, active, that lists exactly
    /// this process's servers. Before a batch that writes (`may_record`),
    /// servers that hold none (restarted, or it was evicted) get it back,
    /// and so do servers holding a record that a process with another
    /// list made when it found none there (see [`strays`]), and when no
    /// server holds one, the pool is recorded. A read writes nothing: where
    /// no server holds a record it is `None`.
    pub async fn conclude<D: Driver>(
        &self,
        driver: &D,
        survey: Vec<Result<Surveyed, Error>>,
        may_record: bool,
    ) -> Result<Option<Learned>, Error> {
        let mut records: Vec<(usize, Membership, &[u8])> = Vec::new();
        let mut cas_of = Vec::new();
        let mut missing = Vec::new();
        let mut empty = true;
        let mut unreachable = None;
        for (server, result) in survey.iter().enumerate() {
            match result {
                Ok(Surveyed {
                    record: Some((stored, cas)),
                    ..
                }) => {
                    records.push((server, self.parse_record(server, stored)?, stored));
                    cas_of.push((server, *cas));
                }
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
        if records.is_empty() {
            if let Some((_, error)) = unreachable {
                return Err(error);
            }
            return match may_record {
                true => self.record_new_pool(driver, empty).await.map(Some),
                false => Ok(None),
            };
        }
        // Records a process with a shorter list made where it found none:
        // replaced by this pool's (swapped by their CAS value), given
        // back like a lost record.
        let strays = strays(&self.ids, &records);
        let mut given_back = Vec::new();
        let mut stray_records = Vec::new();
        if let Some((ours, stored, strays)) = strays {
            stray_records = records
                .iter()
                .filter(|(server, ..)| strays.contains(server))
                .map(|(_, _, stray)| stray.to_vec())
                .collect();
            // Without the anchor (or for a read) they are left as they are,
            // and their servers serve as servers that lost the record do.
            let anchor = self.ids.iter().position(|server| server == ours.anchor());
            if may_record && anchor.is_some_and(|anchor| survey[anchor].is_ok()) {
                let over: Vec<(usize, Option<u64>)> = strays
                    .iter()
                    .map(|server| (*server, cas_of.iter().find(|(at, _)| at == server).map(|(_, cas)| *cas)))
                    .collect();
                tracing::warn!(
                    servers = %strays.iter().map(|&server| self.ids[server].as_str()).collect::<Vec<_>>().join(","),
                    "a server held the record of a pool a shorter server list made where it found none: giving it \
                     this pool's"
                );
                given_back = self.restore(driver, &ours, &stored, over).await?;
            }
            records.retain(|(server, ..)| !strays.contains(server));
        }
        let Some((newest_at, newest, stored)) = records.iter().max_by_key(|(_, record, _)| record.generation) else {
            return Err(Error::Protocol(String::from("no pool record left to use")));
        };
        if let Some((server, other, _)) = records.iter().find(|(_, record, _)| record.id != newest.id) {
            let made = match other.first_use {
                true => "recorded by a first process to use them",
                false => "made by `pool set`",
            };
            return Err(Error::Unavailable(format!(
                "memcached at {} holds the record of another pool, of {} ({made}), than the rest of {}: if that is \
                 the pool, list its servers; to make this list the pool, run `tenant-cache --memcached {} pool set` \
                 (it replaces a record made at first use; records of two pools made by `pool set` are merged, and \
                 every tenant starts empty)",
                self.ids[*server],
                other.servers().join(","),
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
        let anchor_holds = anchor.is_some_and(|anchor| records.iter().any(|(server, ..)| *server == anchor));
        let unchanged = anchor_holds || unreachable.is_none();
        let mut restored = match missing.is_empty() || !anchor_answers || !may_record {
            // Without the anchor no server is given the record back: only
            // the anchor tells that no change has begun meanwhile.
            true => Vec::new(),
            false => {
                let missing = missing.into_iter().map(|server| (server, None)).collect();
                self.restore(driver, &newest, &stored, missing).await?
            }
        };
        restored.extend(given_back);
        Ok(Some(Learned {
            known: self.remember(newest),
            restored,
            strays: stray_records,
            unchanged,
        }))
    }

    /// Gives `record` (stored as `stored`) back to the `missing` servers,
    /// only where they still hold what was read (none, or what has the CAS
    /// value given), and keeps it there only if the pool's anchor still
    /// holds it afterwards: a change of the pool claims the anchor before
    /// it writes anywhere else, so then none began before the record was
    /// given back, and any that begins later will replace it like every
    /// other server's.
    async fn restore<D: Driver>(
        &self,
        driver: &D,
        record: &Membership,
        stored: &[u8],
        missing: Vec<(usize, Option<u64>)>,
    ) -> Result<Vec<usize>, Error> {
        let requests = missing
            .iter()
            .map(|&(server, cas)| {
                let write = match cas {
                    None => Own::AddPool(stored.to_vec()),
                    Some(cas) => Own::SwapPool {
                        record: stored.to_vec(),
                        cas,
                    },
                };
                let request = Request {
                    own: vec![write, Own::ReadPool],
                    ..Request::default()
                };
                (server, request)
            })
            .collect();
        let missing: Vec<usize> = missing.into_iter().map(|(server, _)| server).collect();
        let mut added = Vec::new();
        let mut raced = false;
        for (&server, result) in missing.iter().zip(self.run_all(driver, requests, u64::MAX).await) {
            let answer = result?;
            match answer.own.first() {
                Some(OwnReply::Stored(Some(cas))) => added.push((server, *cas)),
                // Another process gave it the same record first.
                _ if answer.closing_record() == Some(stored) => {}
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
            Ok(answer) => answer.closing_record() == Some(stored),
            Err(_) => false,
        };
        if raced || !anchor_holds {
            self.take_back(driver, added).await;
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let proposal = Membership::first(&self.ids, rand::random(), empty, now).encode();
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
        let chosen = answer
            .closing_record()
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
            if answer.closing_record() != Some(&chosen[..]) {
                disagree = disagree.or(Some(format!("memcached at {} holds another record", self.ids[server])));
            }
        }
        if let Some(why) = disagree {
            self.take_back(driver, added).await;
            return Err(Error::Unavailable(format!(
                "the servers of memcached at {} could not be recorded as one pool ({why}); retry",
                self.ids.join(",")
            )));
        }
        Ok(Learned {
            known: self.remember(record),
            restored: (0..self.ids.len()).collect(),
            strays: Vec::new(),
            unchanged: true,
        })
    }

    /// Removes the pool records this process `added` (server, CAS value),
    /// where no one has changed them since. One that cannot be removed is a
    /// record a change replaces anyway.
    async fn take_back<D: Driver>(&self, driver: &D, added: Vec<(usize, u64)>) {
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
    }

    /// Reads the record `stored` that `server` holds.
    pub fn parse_record(&self, server: usize, stored: &[u8]) -> Result<Membership, Error> {
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
    pub fn unrecorded(&self, server: usize, record: &Membership) -> Error {
        Error::Unavailable(format!(
            "memcached at {} holds no record of this pool (it restarted, or evicted it; a process listing other \
             servers may have recorded its own there since), and it is given the pool's record back only while \
             the pool's first server, {}, answers; retry once it does",
            self.ids[server],
            record.anchor()
        ))
    }

    /// What every listed server holds as the pool record.
    pub async fn report_with<D: Driver>(&self, driver: &D) -> Vec<PoolReport> {
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

/// The records among `records` (server, record, stored) that are strays
/// ([`Membership::strays_from`]) when the rest hold one record listing
/// exactly `servers`: that record, its stored form, and the servers holding
/// strays. Replacing them hides nothing this pool wrote (they were made
/// over emptied servers, or under a tag of their own), and the processes
/// that made them, listing servers that are not the pool's, are fenced
/// from then on.
fn strays(servers: &[String], records: &[(usize, Membership, &[u8])]) -> Option<(Membership, Vec<u8>, Vec<usize>)> {
    let (_, ours, stored) = records
        .iter()
        .find(|(_, record, _)| !record.changing && record.lists(servers))?;
    let mut strays = Vec::new();
    for (server, record, other) in records {
        if other == stored {
            continue;
        }
        if !record.strays_from(ours) {
            return None;
        }
        strays.push(*server);
    }
    (!strays.is_empty()).then(|| (ours.clone(), stored.to_vec(), strays))
}
