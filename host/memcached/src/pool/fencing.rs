//! Every batch under the pool record: its keys carry their route's tag,
//! and it ends by reading `tc:pool`, so a process whose server list or
//! record is not the pool's finds out in the same round trip, before it
//! trusts what it read. Written once, as async code over a [`Driver`]: the
//! blocking driver's futures complete when first polled. How a process
//! learns the record: `learning`; how the record changes: `pool_change`.

use super::{Driver, Pool};
use crate::membership::{MAX_TAG, Tag};
use crate::protocol::{Answer, Group, Own, Request, Surveyed};
use crate::routing::{self, Route};
use crate::types::{Command, Error, Outcome, Replies};

/// `prefix` with `tag` appended: the key prefix of a route's commands.
fn tagged(prefix: &str, tag: Tag) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(prefix.len() + MAX_TAG);
    tagged.extend_from_slice(prefix.as_bytes());
    tag.write(&mut tagged);
    tagged
}

/// The replies of a read that ran where no listed server holds a pool
/// record (a pool nobody has written to yet, or every server restarted):
/// every read misses. Whatever such servers hold was written under no
/// record this process could check, and the pool the first write records
/// tags its keys anew unless the servers were empty, so a read returns
/// only what reads after that write would return: nothing.
fn unrecorded(mut replies: Replies) -> Replies {
    for outcome in &mut replies.outcomes {
        if matches!(
            outcome,
            Outcome::Value(_) | Outcome::ValueWithCas(_) | Outcome::Refresh(_)
        ) {
            *outcome = Outcome::Miss;
        }
    }
    replies.values.clear();
    replies
}

impl Pool {
    /// Runs `commands` (keys relative to `prefix`) on the server that owns
    /// `route`, under the pool record.
    pub async fn execute_with<D: Driver>(
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
        tracing::Span::current().record("server", owner.as_str());
        let mut known = self.known();
        let writes = commands
            .iter()
            .any(|command| !matches!(command, Command::Get(_) | Command::GetWithCas(_) | Command::GetEarly(_)));
        if known.is_none() && writes {
            // A process that knows no record yet learns it before it
            // writes: a list that is not the pool's writes nothing.
            known = Some(self.learn_to_write(driver).await?.known);
        }
        // The second attempt runs only if the record moved the route's keys
        // while the first ran.
        for _ in 0..2 {
            let tag = known
                .as_ref()
                .map_or(Tag::UNRECORDED, |known| known.record.tag(route, owner));
            // With the `bench` feature a request has a field more.
            #[allow(clippy::needless_update)]
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
                    let closing = answer.closing_record().map(<[u8]>::to_vec);
                    match self.conclude(driver, survey, false).await? {
                        Some(learned) => (answer.replies, closing, learned),
                        None => return Ok(unrecorded(answer.replies)),
                    }
                }
                Some(current) => {
                    let answer = self.run_one(driver, server, batch, reply_bytes, writes).await?;
                    let closing = answer.closing_record();
                    if closing == Some(&current.stored[..]) {
                        return Ok(answer.replies);
                    }
                    // Not the record the keys were tagged under: find the
                    // pool's, and keep the answer if it tags the route the same.
                    tracing::info!(server = %owner, "the pool record changed: reading every server's");
                    let closing = closing.map(<[u8]>::to_vec);
                    match self.learn(driver, writes).await? {
                        Some(learned) => (answer.replies, closing, learned),
                        None => return Ok(unrecorded(answer.replies)),
                    }
                }
            };
            if learned.vouches_for(server, closing.as_deref()) && learned.known.record.tag(route, owner) == tag {
                return Ok(replies);
            }
            if learned.unrecorded_at(closing.as_deref()) && !learned.vouches_for(server, closing.as_deref()) {
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
    pub async fn broadcast_with<D: Driver>(&self, driver: &D, prefix: &str, commands: &[Command]) -> Result<(), Error> {
        let mut known = match self.known() {
            Some(known) => known,
            None => self.learn_to_write(driver).await?.known,
        };
        for _ in 0..2 {
            let requests: Vec<(usize, Request<'_>)> = (0..self.ids.len())
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
                    #[allow(clippy::needless_update)]
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
                current &= answer.closing_record() == Some(&known.stored[..]);
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
            known = self.learn_to_write(driver).await?.known;
        }
        Err(Error::Unavailable(format!(
            "the pool record of memcached at {} kept changing during one call; retry",
            self.ids.join(",")
        )))
    }

    /// Runs one request and maps a failed exchange to the capability's error.
    pub async fn run_one<D: Driver>(
        &self,
        driver: &D,
        server: usize,
        request: Request<'_>,
        reply_bytes: u64,
        writes: bool,
    ) -> Result<Answer, Error> {
        let mut results = driver.run(vec![(server, request)], reply_bytes).await;
        match results.pop() {
            Some(result) => result.map_err(|failure| self.error(server, failure, writes)),
            None => Err(Error::Protocol(String::from("the driver ran no request"))),
        }
    }

    /// Runs requests on several servers at once; each failed exchange
    /// becomes its server's error.
    pub async fn run_all<D: Driver>(
        &self,
        driver: &D,
        requests: Vec<(usize, Request<'_>)>,
        reply_bytes: u64,
    ) -> Vec<Result<Answer, Error>> {
        let targets: Vec<(usize, bool)> = requests
            .iter()
            .map(|(server, request)| (*server, request.writes()))
            .collect();
        let results = driver.run(requests, reply_bytes).await;
        results
            .into_iter()
            .zip(targets)
            .map(|(result, (server, writes))| result.map_err(|failure| self.error(server, failure, writes)))
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
        let mut requests: Vec<(usize, Request<'_>)> = (0..self.ids.len())
            .map(|index| match index == server {
                true => (index, batch.take().unwrap_or_default()),
                false => (index, Request::default()),
            })
            .collect();
        for (_, request) in &mut requests {
            request.own.extend([Own::SurveyPool, Own::Stats]);
        }
        let mut answer = None;
        let mut survey = Vec::with_capacity(self.ids.len());
        for (index, result) in self
            .run_all(driver, requests, reply_bytes)
            .await
            .into_iter()
            .enumerate()
        {
            match result {
                Ok(reply) => {
                    survey.push(reply.surveyed());
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
}
