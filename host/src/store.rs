//! What the capability runs on: memcached, or the embedded store.

use memcache::exp::{MetaCommand, MetaResponse};

use crate::bindings::memcached::{Command, Error};

/// The outcome of one command, as a store reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `get` found the item.
    Value(Vec<u8>),
    /// `get` or `delete` found no item.
    Miss,
    /// `set`, `add` or `delete` took effect.
    Done,
    /// `add` found an existing item and stored nothing.
    Exists,
}

/// One reply per command, or an error that concerns the whole batch.
pub(crate) type BatchResult = Result<Vec<Result<Reply, Error>>, Error>;

/// A memcached-like store. Keys reaching it are already scoped to an
/// application and validated.
pub(crate) trait Store: Send + Sync {
    /// Runs `commands` as one pipelined batch on the server owning `route`.
    fn execute(&self, route: &[u8], commands: Vec<Command>) -> BatchResult;
    /// Runs `commands` on every server; fails if any server fails.
    fn broadcast(&self, commands: Vec<Command>) -> Result<(), Error>;
    /// Runs meta commands as they are on the first server (the bench's
    /// raw baseline); only memcached has them.
    fn raw(&self, _commands: Vec<MetaCommand>) -> Result<Vec<MetaResponse>, Error> {
        Err(Error::Protocol(format!(
            "{} takes no raw memcached commands",
            self.describe()
        )))
    }
    /// How many servers a broadcast reaches.
    fn servers(&self) -> usize;
    /// The largest value the store accepts, in bytes.
    fn item_size_limit(&self) -> u64;
    /// Where entries go, for messages ("memcached at 127.0.0.1:11211").
    fn describe(&self) -> String;
}
