//! Which servers form a memcached pool, recorded on every one of them, and
//! the *tag* every route's keys carry.
//!
//! A route's tag names the generation of the pool at which the route's
//! current server started owning it. When a change of the server list
//! moves a route, its keys move to a key space no server ever held for it,
//! so whatever a server kept from an earlier time it owned the route
//! (entries, namespace versions a clear elsewhere has since moved) is
//! never read again; routes the change does not move keep their tag and
//! their entries. docs/architecture.md, "Pool membership", has the
//! reasoning.

use crate::routing::Route;

/// Generations stay within four hex digits, so a tag fits the key budget.
pub const MAX_GENERATION: u32 = 0xffff;

/// The longest tag: `~`, the pool id (8 hex digits), the generation (at
/// most 4) and `:`.
pub const MAX_TAG: usize = 14;

/// Departed servers the record keeps; beyond that the earliest is
/// forgotten and the floor raised past it.
const MAX_DEPARTED: usize = 32;

/// What the pool record says: the pool's identity, its generation, its
/// servers and those that left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Random, chosen when the pool was first recorded: tags of two pool
    /// lifetimes never meet.
    pub id: u32,
    /// Moves by one with every change of the server list.
    pub generation: u32,
    /// No route's tag is older than this generation.
    pub floor: u32,
    /// A change is between its two phases: no server may be used.
    pub changing: bool,
    /// For a change under way, the server where it commits (the anchor of
    /// the record it changes, see [`anchor`](Self::anchor)).
    pub commit_at: Option<String>,
    /// The servers, sorted, each with the generation it (last) joined.
    pub members: Vec<(String, u32)>,
    /// Servers that left, sorted, each with the last generation it was in.
    pub departed: Vec<(String, u32)>,
    /// Recorded by the first process to use servers that held none, and
    /// never changed by `pool set` since: what a process with a wrong
    /// server list may have recorded on a server that lost the pool's.
    pub first_use: bool,
    /// For a first-use record: when it was recorded (milliseconds since the
    /// Unix epoch, by the recording process's clock), if it says.
    pub recorded_at: Option<u64>,
}

/// The tag of a route's keys: nothing for generation 1, `~<id><gen>:`
/// otherwise. Two tags are equal when they write the same.
#[derive(Clone, Copy, Debug, Eq)]
pub struct Tag {
    id: u32,
    generation: u32,
}

impl PartialEq for Tag {
    fn eq(&self, other: &Tag) -> bool {
        self.generation == other.generation && (self.generation == 1 || self.id == other.id)
    }
}

impl Tag {
    /// The tag of a pool nobody has recorded yet: that of generation 1.
    pub const UNRECORDED: Tag = Tag { id: 0, generation: 1 };

    /// Appends the tag to a key prefix.
    pub fn write(self, out: &mut Vec<u8>) {
        if self.generation != 1 {
            use std::io::Write;
            let _ = write!(out, "~{:08x}{:x}:", self.id, self.generation);
        }
    }
}

/// Sorted, deduplicated server addresses.
pub fn sorted(servers: &[String]) -> Vec<String> {
    let mut sorted = servers.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
}

impl Membership {
    /// The first record of a pool of `servers`, recorded at `recorded_at`
    /// (milliseconds since the Unix epoch). On servers that held nothing
    /// (`empty`), generation 1, whose keys carry no tag; otherwise
    /// generation 2 and up only, so nothing a server kept from an earlier
    /// pool is read.
    pub fn first(servers: &[String], id: u32, empty: bool, recorded_at: u64) -> Membership {
        let generation = if empty { 1 } else { 2 };
        Membership {
            id,
            generation,
            floor: generation,
            changing: false,
            commit_at: None,
            members: sorted(servers).into_iter().map(|server| (server, generation)).collect(),
            departed: Vec::new(),
            first_use: true,
            recorded_at: Some(recorded_at),
        }
    }

    /// The record of one pool made of `servers`, over records of several
    /// pools, the newest at `newest`: a new id, every route tagged anew (so
    /// nothing any of those pools kept is read), and the members of the
    /// old pools that are not in `servers` departed, so they are fenced.
    pub fn merged(servers: &[String], id: u32, newest: u32, old_members: &[String]) -> Result<Membership, String> {
        let generation = newest + 1;
        if generation > MAX_GENERATION {
            return Err(format!(
                "the pool has changed {MAX_GENERATION} times, the most a record holds"
            ));
        }
        let servers = sorted(servers);
        let departed = sorted(old_members)
            .into_iter()
            .filter(|server| !servers.contains(server))
            .map(|server| (server, newest))
            .collect();
        Ok(Membership {
            id,
            generation,
            floor: generation,
            changing: false,
            commit_at: None,
            members: servers.into_iter().map(|server| (server, generation)).collect(),
            departed,
            first_use: false,
            recorded_at: None,
        })
    }

    /// The record after the server list becomes `servers`: members that
    /// stay keep their generation, new ones join now, those that leave are
    /// remembered as departed.
    pub fn next(&self, servers: &[String]) -> Result<Membership, String> {
        let generation = self.generation + 1;
        if generation > MAX_GENERATION {
            return Err(format!(
                "the pool has changed {MAX_GENERATION} times, the most a record holds; start a new pool (on \
                 emptied servers)"
            ));
        }
        let servers = sorted(servers);
        let members = servers
            .iter()
            .map(|server| (server.clone(), self.joined(server).unwrap_or(generation)))
            .collect();
        let mut departed: Vec<(String, u32)> = self
            .departed
            .iter()
            .filter(|(server, _)| !servers.contains(server))
            .cloned()
            .chain(
                self.members
                    .iter()
                    .filter(|(server, _)| !servers.contains(server))
                    .map(|(server, _)| (server.clone(), self.generation)),
            )
            .collect();
        let mut floor = self.floor;
        while departed.len() > MAX_DEPARTED {
            let earliest = (0..departed.len()).min_by_key(|&index| departed[index].1).unwrap_or(0);
            floor = floor.max(departed.remove(earliest).1 + 1);
        }
        departed.sort();
        Ok(Membership {
            id: self.id,
            generation,
            floor,
            changing: false,
            commit_at: None,
            members,
            departed,
            first_use: false,
            recorded_at: None,
        })
    }

    /// The server where a change of this record is claimed and committed:
    /// the first member (sorted). Every change of one record claims the
    /// same server with compare-and-swap, so of concurrent changes at most
    /// one gets past it. A change under way keeps the anchor of the record
    /// it changes.
    pub fn anchor(&self) -> &str {
        match &self.commit_at {
            Some(server) => server,
            None => self.members.first().map_or("", |(server, _)| server),
        }
    }

    /// The servers a change that made this record writes: its members and
    /// the servers it made leave.
    pub fn written_by_change(&self) -> Vec<String> {
        let leaving = self
            .departed
            .iter()
            .filter(|(_, last)| last + 1 == self.generation)
            .map(|(server, _)| server.clone());
        sorted(&self.servers().into_iter().chain(leaving).collect::<Vec<_>>())
    }

    /// This record as a change under way, committing at `commit_at`.
    pub fn changing_at(&self, commit_at: &str) -> Membership {
        Membership {
            changing: true,
            commit_at: Some(commit_at.to_owned()),
            ..self.clone()
        }
    }

    /// This record as the pool's, once its change committed.
    pub fn committed(&self) -> Membership {
        Membership {
            changing: false,
            commit_at: None,
            ..self.clone()
        }
    }

    /// The generation `server` joined at, if it is a member.
    fn joined(&self, server: &str) -> Option<u32> {
        self.members
            .iter()
            .find(|(member, _)| member == server)
            .map(|&(_, joined)| joined)
    }

    /// Whether the members are exactly `servers` (in any order).
    pub fn lists(&self, servers: &[String]) -> bool {
        let servers = sorted(servers);
        self.members.len() == servers.len()
            && self
                .members
                .iter()
                .zip(&servers)
                .all(|((member, _), server)| member == server)
    }

    /// The members' addresses.
    pub fn servers(&self) -> Vec<String> {
        self.members.iter().map(|(server, _)| server.clone()).collect()
    }

    /// Whether `server` left the pool.
    pub fn has_departed(&self, server: &str) -> bool {
        self.departed.iter().any(|(departed, _)| departed == server)
    }

    /// The tag of `route`, owned by `owner` (a member). The route's
    /// server has owned it since the later of the owner joining and every
    /// departed server that outranked the owner for the route leaving.
    pub fn tag(&self, route: Route, owner: &str) -> Tag {
        let mut generation = self.floor.max(self.joined(owner).unwrap_or(self.generation));
        let score = route.score(owner);
        for (server, last) in &self.departed {
            if last + 1 > generation && route.score(server) > score {
                generation = last + 1;
            }
        }
        Tag {
            id: self.id,
            generation,
        }
    }

    /// Every tag a route owned by `server` can have: what a record meant
    /// for every route (the application version) is written under each.
    pub fn tags_of(&self, server: &str) -> Vec<Tag> {
        let base = self.floor.max(self.joined(server).unwrap_or(self.generation));
        let mut generations: Vec<u32> = std::iter::once(base)
            .chain(
                self.departed
                    .iter()
                    .map(|(_, last)| last + 1)
                    .filter(|&generation| generation > base),
            )
            .collect();
        generations.sort_unstable();
        generations.dedup();
        generations
            .into_iter()
            .map(|generation| Tag {
                id: self.id,
                generation,
            })
            .collect()
    }

    /// Whether this record, found on a server of the pool `ours` lists,
    /// is a stray there: a first-use record (no `pool set` made or changed
    /// it) of another pool that came after `ours`. `ours` is held by the
    /// pool's other servers and names this one, so this one held it too (a
    /// first use that meets another record takes back what it added), until
    /// it lost it (a restart emptied it) and a process with another list
    /// found none there. *After*: `ours` was made by `pool set`, or both
    /// were recorded at first use and this one later (its recording time,
    /// then its id, the larger; records that do not say when, from earlier
    /// versions: this one lists a strict subset of `ours`' servers). The
    /// order is total, so two lists never take each other's servers back
    /// and forth, and a record `pool set` made is never a stray.
    pub fn strays_from(&self, ours: &Membership) -> bool {
        if self.id == ours.id || !self.first_use || self.changing {
            return false;
        }
        match (self.recorded_at, ours.recorded_at) {
            _ if !ours.first_use => true,
            (Some(theirs), Some(mine)) => (theirs, self.id) > (mine, ours.id),
            _ => {
                let servers = ours.servers();
                self.members.len() < servers.len() && self.servers().iter().all(|member| servers.contains(member))
            }
        }
    }

    /// The record's stored form: one line of text.
    pub fn encode(&self) -> Vec<u8> {
        let list = |servers: &[(String, u32)]| {
            servers
                .iter()
                .map(|(server, generation)| format!("{server}@{generation}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let state = match (&self.commit_at, self.changing) {
            (Some(server), true) => format!("changing commit={server}"),
            (_, true) => String::from("changing"),
            (_, false) => String::from("active"),
        };
        let origin = match (self.first_use, self.recorded_at) {
            (true, Some(at)) => format!(" origin=first-use recorded={at}"),
            (true, None) => String::from(" origin=first-use"),
            (false, _) => String::new(),
        };
        format!(
            "tc-pool/1 id={:08x} generation={} floor={} state={state} members={} departed={}{origin}",
            self.id,
            self.generation,
            self.floor,
            list(&self.members),
            list(&self.departed),
        )
        .into_bytes()
    }

    /// Reads a stored record.
    pub fn parse(stored: &[u8]) -> Result<Membership, String> {
        let text = std::str::from_utf8(stored).map_err(|_| String::from("not text"))?;
        let mut fields = text.split(' ');
        if fields.next() != Some("tc-pool/1") {
            return Err(String::from("not a tenant-cache pool record of a known version"));
        }
        let mut record = Membership {
            id: 0,
            generation: 0,
            floor: 0,
            changing: false,
            commit_at: None,
            members: Vec::new(),
            departed: Vec::new(),
            first_use: false,
            recorded_at: None,
        };
        let list = |value: &str| -> Result<Vec<(String, u32)>, String> {
            let mut servers: Vec<(String, u32)> = value
                .split(',')
                .filter(|server| !server.is_empty())
                .map(|server| {
                    let (address, generation) = server.rsplit_once('@').ok_or("a server without its generation")?;
                    let generation = generation.parse().map_err(|_| "a bad generation")?;
                    Ok::<_, &str>((address.to_owned(), generation))
                })
                .collect::<Result<_, _>>()?;
            servers.sort();
            Ok(servers)
        };
        for field in fields {
            let (name, value) = field.split_once('=').ok_or("a field without a value")?;
            let number = || value.parse::<u32>().map_err(|_| format!("a bad {name}"));
            match name {
                "id" => record.id = u32::from_str_radix(value, 16).map_err(|_| "a bad id")?,
                "generation" => record.generation = number()?,
                "floor" => record.floor = number()?,
                "state" => record.changing = value == "changing",
                "commit" => record.commit_at = Some(value.to_owned()),
                "members" => record.members = list(value)?,
                "departed" => record.departed = list(value)?,
                "origin" => record.first_use = value == "first-use",
                "recorded" => record.recorded_at = Some(value.parse().map_err(|_| "a bad recorded")?),
                _ => {}
            }
        }
        if record.generation == 0 || record.generation > MAX_GENERATION || record.members.is_empty() {
            return Err(String::from("a record without a generation or members"));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing;

    fn servers(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| format!("{name}:11211")).collect()
    }

    fn tag_of(record: &Membership, route: &str) -> (String, Tag) {
        let list = record.servers();
        let route = Route::new(route.as_bytes());
        let owner = list[routing::owner(route, &list)].clone();
        let tag = record.tag(route, &owner);
        (owner, tag)
    }

    #[test]
    fn a_later_first_use_record_is_a_stray_and_never_the_other_way_round() {
        let pool = Membership::first(&servers(&["a", "b", "c"]), 1, true, 1_000);
        let later = Membership::first(&servers(&["b", "d"]), 2, true, 2_000);
        let longer = Membership::first(&servers(&["b", "d", "e", "f"]), 3, true, 2_000);
        assert!(later.strays_from(&pool) && !pool.strays_from(&later));
        assert!(longer.strays_from(&pool) && !pool.strays_from(&longer));
        // Recorded in the same millisecond: the larger id is the stray.
        let tie = Membership::first(&servers(&["b", "d"]), 0, true, 1_000);
        assert!(pool.strays_from(&tie) && !tie.strays_from(&pool));
        // A record `pool set` made is never one, and always wins.
        let set = pool.next(&servers(&["a", "b", "c", "d"])).unwrap();
        assert!(later.strays_from(&set) && !set.strays_from(&later));
        // Records that do not say when: only a strict subset is.
        let (mut old, mut subset) = (pool.clone(), Membership::first(&servers(&["b"]), 4, true, 0));
        (old.recorded_at, subset.recorded_at) = (None, None);
        assert!(subset.strays_from(&old) && !old.strays_from(&subset));
        assert!(!later.strays_from(&old) && !old.strays_from(&later));
        // Its own pool's record is no stray.
        assert!(!pool.strays_from(&pool.clone()));
    }

    #[test]
    fn records_round_trip() {
        let first = Membership::first(&servers(&["b", "a"]), 0xdead_beef, true, 1);
        let next = first.next(&servers(&["a", "c"])).unwrap();
        let changing = next.changing_at("a:11211");
        assert!(first.first_use && !next.first_use && !changing.first_use);
        for record in [first, next, changing] {
            assert_eq!(Membership::parse(&record.encode()), Ok(record));
        }
        for bad in [
            &b""[..],
            b"tc-pool/2 id=1",
            b"tc-pool/1 generation=0 members=a@1",
            b"\xff",
        ] {
            assert!(Membership::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_fresh_pool_tags_nothing_and_one_over_old_data_tags_everything() {
        let fresh = Membership::first(&servers(&["a", "b"]), 7, true, 1);
        let reused = Membership::first(&servers(&["a", "b"]), 8, false, 1);
        for n in 0..100 {
            let route = format!("tenant-{n}");
            assert_eq!(tag_of(&fresh, &route).1, Tag::UNRECORDED);
            assert_ne!(tag_of(&reused, &route).1, Tag::UNRECORDED);
        }
        let mut key = Vec::new();
        tag_of(&reused, "t").1.write(&mut key);
        assert_eq!(key, b"~000000082:");
    }

    /// Every way of changing the list: a route keeps its tag exactly when
    /// its server stays the same through the change, and a route that
    /// comes back to a server it left never gets the tag it had there.
    #[test]
    fn tags_change_exactly_with_the_owner_and_never_repeat() {
        let lists: Vec<Vec<String>> = [
            &["a", "b", "c"][..],
            &["a", "c"],
            &["a", "b", "c"],
            &["a", "b", "c", "d"],
            &["b", "c", "d"],
            &["a", "b"],
            &["a", "b", "c", "d", "e"],
            &["a", "b", "c"],
        ]
        .iter()
        .map(|names| servers(names))
        .collect();
        let mut record = Membership::first(&lists[0], 1, true, 1);
        let routes: Vec<String> = (0..500).map(|n| format!("tenant-{n}")).collect();
        let mut history: Vec<Vec<(String, Tag)>> = vec![routes.iter().map(|route| tag_of(&record, route)).collect()];
        for list in &lists[1..] {
            record = record.next(list).unwrap();
            let now: Vec<(String, Tag)> = routes.iter().map(|route| tag_of(&record, route)).collect();
            let before = history.last().unwrap();
            for (index, ((owner, tag), (owner_before, tag_before))) in now.iter().zip(before).enumerate() {
                assert_eq!(
                    owner == owner_before,
                    tag == tag_before,
                    "{} in {list:?}",
                    routes[index]
                );
            }
            // A (server, tag) pair names one continuous stretch of
            // ownership: it never appears again after a gap.
            for (index, (owner, tag)) in now.iter().enumerate() {
                let mut stretch_ended = false;
                for earlier in history.iter().rev() {
                    let (earlier_owner, earlier_tag) = &earlier[index];
                    let same = earlier_owner == owner && earlier_tag == tag;
                    assert!(
                        !(same && stretch_ended),
                        "{} came back to {owner} under an old tag",
                        routes[index]
                    );
                    stretch_ended |= !same;
                }
            }
            for (owner, tag) in &now {
                assert!(record.tags_of(owner).contains(tag), "{tag:?} not among {owner}'s tags");
            }
            history.push(now);
        }
    }

    #[test]
    fn a_change_writes_the_old_and_the_new_servers_and_commits_at_the_old_anchor() {
        let first = Membership::first(&servers(&["b", "c"]), 1, true, 1);
        assert_eq!(first.anchor(), "b:11211");
        let next = first.next(&servers(&["a", "c"])).unwrap();
        assert_eq!(next.written_by_change(), servers(&["a", "b", "c"]));
        let changing = next.changing_at(first.anchor());
        assert_eq!(changing.anchor(), "b:11211");
        assert_eq!(changing.committed(), next);
        assert_eq!(next.anchor(), "a:11211");
        // A change over a change under way: its own leavers and the
        // earlier change's joiners that do not stay.
        let after = next.next(&servers(&["c"])).unwrap();
        assert_eq!(after.written_by_change(), servers(&["a", "c"]));
        let merged = Membership::merged(&servers(&["c", "d"]), 9, 4, &servers(&["a", "b", "c"])).unwrap();
        assert_eq!(merged.written_by_change(), servers(&["a", "b", "c", "d"]));
        assert_eq!(merged.generation, 5);
        assert_ne!(
            merged.tag(Route::new(b"t"), "c:11211"),
            first.tag(Route::new(b"t"), "c:11211")
        );
    }

    #[test]
    fn too_many_departed_raise_the_floor() {
        let mut record = Membership::first(&servers(&["keep"]), 1, true, 1);
        for n in 0..40 {
            let name = format!("s{n}");
            record = record.next(&servers(&["keep", &name])).unwrap();
            record = record.next(&servers(&["keep"])).unwrap();
        }
        assert_eq!(record.departed.len(), MAX_DEPARTED);
        assert!(record.floor > 1);
        assert!(record.tags_of("keep:11211").len() <= MAX_DEPARTED + 1);
    }
}
