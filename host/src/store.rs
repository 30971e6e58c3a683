//! What the capability runs on: memcached, or the embedded store.

use memcache::exp::MetaCommand;

use crate::bindings::memcached::{Command, Error, Replies, Reply as Outcome};

/// The replies to a batch as the capability returns them (one outcome per
/// command, the values back to back), or an error that concerns the whole
/// batch.
pub(crate) type BatchResult = Result<Replies, Error>;

/// Appends a value outcome: `bytes` go at the end of the batch's values.
/// Values are below memcached's 1 GiB item limit, so the length fits.
pub(crate) fn push_value(replies: &mut Replies, bytes: &[u8]) {
    replies.values.extend_from_slice(bytes);
    replies.outcomes.push(Outcome::Value(bytes.len() as u32));
}

/// A memcached-like store. Keys reaching it are already scoped to an
/// application and validated.
pub(crate) trait Store: Send + Sync {
    /// Runs `commands` as one pipelined batch on the server owning `route`.
    fn execute(&self, route: &[u8], commands: Vec<Command>) -> BatchResult;
    /// Runs `commands` on every server; fails if any server fails.
    fn broadcast(&self, commands: Vec<Command>) -> Result<(), Error>;
    /// Runs meta commands as they are on the first server (the bench's
    /// raw baseline); only memcached has them. Replies map by their code
    /// alone: `VA` a value, `HD` done, `EN`/`NF` a miss, `NS`/`EX` exists.
    fn raw(&self, _commands: Vec<MetaCommand>) -> BatchResult {
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
