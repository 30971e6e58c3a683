//! memcached's meta protocol without I/O: a batch encoded into bytes (this
//! file), and its replies read from bytes as they arrive, with every check
//! an exchange makes (`reply`). The blocking and the tokio drivers only
//! move bytes.

use self::line::Code;

use crate::types::{Command, Error, Item, Limit, NewVersion, Replies};

/// The host's record of the pool's membership, on every server.
pub const POOL_KEY: &[u8] = b"tc:pool";

/// memcached reads a TTL above 30 days as a unix time.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 3600;

/// The latest unix time memcached stores: its expiry field is a signed
/// 32-bit number (2038-01-19T03:14:07Z).
const MAX_EXPIRY: u64 = i32::MAX as u64;

/// A batch for one server: the capability's commands, in groups that
/// share a key prefix, then the host's own.
#[derive(Default)]
pub struct Request<'a> {
    pub groups: Vec<Group<'a>>,
    /// Meta commands as they are (the bench's raw baseline); their replies
    /// are read as the capability's, by code alone.
    #[cfg(feature = "bench")]
    pub raw: Vec<memcache::exp::MetaCommand>,
    pub own: Vec<Own>,
}

/// Commands whose keys all start with one prefix.
pub struct Group<'a> {
    /// Written before every key: `tc:<app>:` and the route's tag. (Keys of
    /// the host's own commands are written as they are.)
    pub prefix: Vec<u8>,
    pub commands: &'a [Command],
}

impl Request<'_> {
    /// How many commands the request holds besides the host's own.
    pub fn commands(&self) -> usize {
        #[cfg(feature = "bench")]
        let raw = self.raw.len();
        #[cfg(not(feature = "bench"))]
        let raw = 0;
        self.groups.iter().map(|group| group.commands.len()).sum::<usize>() + raw
    }

    /// How many opaque tokens the request takes: one a command.
    pub fn tokens(&self) -> u64 {
        (self.commands() + self.own.len()) as u64
    }

    /// Whether any command writes.
    pub fn writes(&self) -> bool {
        let capability = self.groups.iter().flat_map(|group| group.commands);
        capability
            .clone()
            .any(|command| !matches!(command, Command::Get(_) | Command::GetEarly(_) | Command::GetWithCas(_)))
            || self
                .own
                .iter()
                .any(|own| !matches!(own, Own::ReadPool | Own::SurveyPool | Own::Stats))
    }
}

/// A command of the host's own, about the pool rather than an application.
/// Every write of the pool record is conditional: it is stored where none
/// is, or replaces the one read, by its CAS value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Own {
    /// Read the pool record: the check every batch ends with.
    ReadPool,
    /// Read the pool record and its CAS value.
    SurveyPool,
    /// Store the pool record unless one exists.
    AddPool(Vec<u8>),
    /// Replace the pool record if its CAS value is still `cas`.
    SwapPool { record: Vec<u8>, cas: u64 },
    /// Remove the pool record if its CAS value is still `cas`.
    RemovePool { cas: u64 },
    /// memcached's `stats`: how many items the server holds.
    Stats,
}

/// What a command of the host's own answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnReply {
    /// The pool record, if the server holds one.
    Pool(Option<Vec<u8>>),
    /// The pool record and its CAS value, if the server holds one.
    Surveyed(Option<(Vec<u8>, u64)>),
    /// A store took effect, and the record's CAS value now; `None` if it
    /// did not (a record exists, or not the one read).
    Stored(Option<u64>),
    /// Whether a removal took effect.
    Removed(bool),
    /// Items the server holds now, and has stored since it started.
    Stats { current: u64, total: u64 },
}

/// The answer to a request: the capability's replies and the host's own.
#[derive(Debug)]
pub struct Answer {
    pub replies: Replies,
    pub own: Vec<OwnReply>,
}

/// What a server holds: its pool record with its CAS value, and how many
/// items it holds now and has stored since it started.
pub struct Surveyed {
    pub record: Option<(Vec<u8>, u64)>,
    pub current: u64,
    pub total: u64,
}

impl Answer {
    /// The pool record the answer ends with (the last of its own replies).
    pub fn closing_record(&self) -> Option<&[u8]> {
        self.own.iter().rev().find_map(|reply| match reply {
            OwnReply::Pool(record) => Some(record.as_deref()),
            OwnReply::Surveyed(record) => Some(record.as_ref().map(|(stored, _)| &stored[..])),
            _ => None,
        })?
    }

    /// What an answer that ends with a survey says the server holds.
    pub fn surveyed(&self) -> Result<Surveyed, Error> {
        match self.own.as_slice() {
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
}

/// How a reply is read: what the command it answers was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    /// A get that may win an early refresh (`W` on its reply line).
    GetEarly,
    /// A get whose reply carries the item's CAS value.
    Survey,
    Store,
    /// `ma`: the new number, `NF`, or a refusal of a value that is not one.
    Arithmetic,
    Delete,
    Stats,
    /// A raw meta command: any reply code answers it.
    #[cfg(feature = "bench")]
    Raw,
}

impl Kind {
    /// Whether `code` answers a command of this kind.
    fn fits(self, code: Code) -> bool {
        #[cfg(feature = "bench")]
        if self == Kind::Raw {
            return true;
        }
        // `EX` and `NF` answer the host's compare-and-swap stores and
        // removals.
        matches!(
            (self, code),
            (Kind::Get | Kind::GetEarly | Kind::Survey, Code::Va | Code::En)
                | (Kind::Arithmetic, Code::Va | Code::Nf)
                | (Kind::Store, Code::Hd | Code::Ns | Code::Ex | Code::Nf)
                | (Kind::Delete, Code::Hd | Code::Nf | Code::Ex)
        )
    }
}

/// The expiry memcached is sent for a TTL of `secs`, set at unix time
/// `now`; `None` for no expiry. Up to 30 days it is the TTL itself; beyond,
/// memcached reads it as the unix time it ends, rounded up so the entry
/// never ends early. An end past memcached's last expressible time (the
/// year 2038) is clamped to that time, or, once that time is less than 30
/// days away, to the longest relative TTL (30 days).
pub fn wire_ttl(secs: u32, now: u64) -> u64 {
    let secs = u64::from(secs);
    if secs <= MAX_RELATIVE_TTL {
        return secs;
    }
    let end = now + secs + 1;
    if end <= MAX_EXPIRY {
        end
    } else if MAX_EXPIRY > now + MAX_RELATIVE_TTL {
        MAX_EXPIRY
    } else {
        MAX_RELATIVE_TTL
    }
}

/// Writes `request` into `out`, each command stamped with an opaque token
/// from `first` on, in order; `now` (unix time) turns long TTLs into
/// expiry times. The keys were checked by the grant: printable ASCII,
/// short enough with the prefix.
fn encode(request: &Request<'_>, first: u64, now: u64, out: &mut Vec<u8>) -> Vec<Kind> {
    let mut kinds = Vec::with_capacity(request.commands() + request.own.len());
    let mut tokens = first..;
    let mut token = || tokens.next().unwrap_or_default();
    let commands = request
        .groups
        .iter()
        .flat_map(|group| group.commands.iter().map(|command| (&group.prefix, command)));
    for (prefix, command) in commands {
        let key = |out: &mut Vec<u8>, key: &str| {
            out.extend_from_slice(prefix);
            out.extend_from_slice(key.as_bytes());
        };
        kinds.push(match command {
            // The grant turns every new-version into the store of the
            // version it draws (`capability.rs`); were one to come this far,
            // it would only be read.
            Command::Get(rel) | Command::NewVersion(NewVersion { key: rel, .. }) => {
                out.extend_from_slice(b"mg ");
                key(out, rel);
                get_flags(token(), out);
                Kind::Get
            }
            Command::GetEarly(early) => {
                out.extend_from_slice(b"mg ");
                key(out, &early.key);
                out.extend_from_slice(format!(" R{} c", early.window).as_bytes());
                get_flags(token(), out);
                Kind::GetEarly
            }
            Command::Set(item) | Command::Add(item) => {
                out.extend_from_slice(b"ms ");
                key(out, &item.key);
                let condition: &[u8] = match command {
                    Command::Add(_) => b"ME",
                    _ => b"",
                };
                store_flags(item, condition, token(), now, out);
                Kind::Store
            }
            Command::Delete(rel) => {
                out.extend_from_slice(b"md ");
                key(out, rel);
                out.push(b' ');
                out.extend_from_slice(opaque(token()).as_slice());
                out.extend_from_slice(b"\r\n");
                Kind::Delete
            }
            Command::GetWithCas(rel) => {
                out.extend_from_slice(b"mg ");
                key(out, rel);
                out.extend_from_slice(b" c");
                get_flags(token(), out);
                Kind::Survey
            }
            Command::SetIfCas(cas_item) => {
                out.extend_from_slice(b"ms ");
                key(out, &cas_item.item.key);
                let condition = format!("C{}", cas_item.cas);
                store_flags(&cas_item.item, condition.as_bytes(), token(), now, out);
                Kind::Store
            }
            Command::Increment(delta) => {
                out.extend_from_slice(b"ma ");
                key(out, &delta.key);
                out.extend_from_slice(format!(" D{}", delta.delta).as_bytes());
                get_flags(token(), out);
                Kind::Arithmetic
            }
        });
    }
    #[cfg(feature = "bench")]
    for command in &request.raw {
        let command = command.clone().flag(opaque(token()).as_slice());
        // The bench's commands are known good; one that is not fails its
        // reply instead.
        let _ = command.encode_into(out);
        kinds.push(Kind::Raw);
    }
    for own in &request.own {
        kinds.push(match own {
            Own::ReadPool => {
                out.extend_from_slice(b"mg ");
                out.extend_from_slice(POOL_KEY);
                get_flags(token(), out);
                Kind::Get
            }
            Own::SurveyPool => {
                out.extend_from_slice(b"mg ");
                out.extend_from_slice(POOL_KEY);
                out.extend_from_slice(b" v c ");
                out.extend_from_slice(opaque(token()).as_slice());
                out.extend_from_slice(b"\r\n");
                Kind::Survey
            }
            Own::AddPool(record) => {
                pool_store(record, b"ME", token(), out);
                Kind::Store
            }
            Own::SwapPool { record, cas } => {
                pool_store(record, format!("C{cas}").as_bytes(), token(), out);
                Kind::Store
            }
            Own::RemovePool { cas } => {
                out.extend_from_slice(b"md ");
                out.extend_from_slice(POOL_KEY);
                out.extend_from_slice(format!(" C{cas} ").as_bytes());
                out.extend_from_slice(opaque(token()).as_slice());
                out.extend_from_slice(b"\r\n");
                Kind::Delete
            }
            Own::Stats => {
                out.extend_from_slice(b"stats\r\n");
                Kind::Stats
            }
        });
    }
    kinds
}

/// ` v O<token>\r\n`: the flags of a get.
fn get_flags(token: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b" v ");
    out.extend_from_slice(opaque(token).as_slice());
    out.extend_from_slice(b"\r\n");
}

/// `ms tc:pool <len> <condition> c O<token>\r\n<record>\r\n`: a store of
/// the pool record under `condition` (`ME`, or `C<cas>`), answering with
/// the record's new CAS value.
fn pool_store(record: &[u8], condition: &[u8], token: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(POOL_KEY);
    out.push(b' ');
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(condition);
    out.extend_from_slice(b" c ");
    out.extend_from_slice(opaque(token).as_slice());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(record);
    out.extend_from_slice(b"\r\n");
}

/// ` <len>[ T<ttl>][ <condition>] O<token>\r\n<value>\r\n`: the rest of
/// a store (`condition`: `ME` for an add, `C<cas>` for a compare-and-swap,
/// nothing for a set).
fn store_flags(item: &Item, condition: &[u8], token: u64, now: u64, out: &mut Vec<u8>) {
    out.push(b' ');
    out.extend_from_slice(item.value.len().to_string().as_bytes());
    if let Some(secs) = item.ttl {
        out.extend_from_slice(b" T");
        out.extend_from_slice(wire_ttl(secs, now).to_string().as_bytes());
    }
    if !condition.is_empty() {
        out.push(b' ');
        out.extend_from_slice(condition);
    }
    out.push(b' ');
    out.extend_from_slice(opaque(token).as_slice());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&item.value);
    out.extend_from_slice(b"\r\n");
}

mod line;
mod reply;

#[cfg(test)]
pub use reply::INPUT_BUFFER;
pub use reply::{Exchange, Expected, Failure, Input, ReadLimits};

/// The opaque flag for `token`: `O` and the token in hex.
fn opaque(token: u64) -> Opaque {
    let digits = (64 - token.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut bytes = [b'O'; 17];
    for (index, byte) in bytes[1..=digits].iter_mut().enumerate() {
        let nibble = (token >> (4 * (digits - 1 - index))) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    Opaque { bytes, len: 1 + digits }
}

/// An opaque flag, without an allocation.
struct Opaque {
    bytes: [u8; 17],
    len: usize,
}

impl Opaque {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A capability error as a person reads it.
pub fn describe(error: &Error) -> String {
    match error {
        Error::Unavailable(text) | Error::InvalidKey(text) | Error::Protocol(text) | Error::Denied(text) => {
            text.clone()
        }
        Error::ValueTooLarge(limit) => format!("the value exceeds the item size limit of {limit} bytes"),
        Error::OverLimit(Limit::CommandsPerBatch(limit)) => {
            format!("the batch has more commands than the host runs at once ({limit})")
        }
        Error::OverLimit(Limit::ReplyBytes(limit)) => {
            format!("the batch's replies exceed the {limit} bytes the host gathers for one call")
        }
        Error::OverLimit(Limit::Budget(over)) => crate::budget::describe(over),
    }
}

/// The one place exchange failures become capability errors. `writes`:
/// whether the batch held writes (which may or may not have been applied
/// when it failed once connected).
pub fn to_error(address: &str, failure: Failure, timeout: std::time::Duration, writes: bool) -> Error {
    let unknown = if writes {
        "; its writes may or may not have been applied"
    } else {
        ""
    };
    match failure {
        Failure::Connect(error) => Error::Unavailable(format!("memcached at {address} is unreachable: {error}")),
        Failure::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => Error::Unavailable(format!(
            "memcached at {address} did not answer within {timeout:?}{unknown}"
        )),
        Failure::Io(error) => {
            Error::Unavailable(format!("memcached at {address} failed mid-request: {error}{unknown}"))
        }
        Failure::Rejected(message) => Error::Protocol(format!(
            "memcached at {address} refused the request: {message}{unknown}"
        )),
        Failure::Garbled(what) => Error::Protocol(format!(
            "memcached at {address} sent {what}; connection dropped{unknown}"
        )),
        Failure::Mismatch => Error::Protocol(format!(
            "memcached at {address} sent a reply that does not match the request; connection dropped{unknown}"
        )),
        Failure::ReplyTooLarge(limit) => Error::OverLimit(Limit::ReplyBytes(limit)),
    }
}

#[cfg(test)]
mod tests;
