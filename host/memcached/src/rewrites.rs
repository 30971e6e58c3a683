//! What the grant changes in a batch before it is sent (stores that cannot
//! fit, versions it draws), and how it puts that back into the replies the
//! component reads, in the component's own command order.

use crate::types::{Error, Outcome, Replies};

/// What the grant changed in a batch before sending it, to be put back into
/// its replies.
#[derive(Default)]
pub struct Rewrites {
    /// Stores that could not fit, sent as deletes: their index and the
    /// item size limit.
    pub refused: Vec<(usize, u64)>,
    /// `new-version` commands, sent as stores: their index and the version
    /// drawn.
    pub minted: Vec<(usize, u64)>,
    /// Conditional stores that could not fit, not sent: their index (in
    /// the batch as the component sent it, ascending) and the item size
    /// limit.
    pub skipped: Vec<(usize, u64)>,
}

impl Rewrites {
    /// Puts the failures of stores not sent or sent as deletes, and the
    /// versions of those stored, into the replies. Indices are the
    /// component's: the replies of the commands not sent go back in their
    /// places first.
    pub fn apply(self, replies: &mut Replies) {
        for (index, limit) in self.skipped {
            let index = index.min(replies.outcomes.len());
            replies
                .outcomes
                .insert(index, Outcome::Failed(Error::ValueTooLarge(limit)));
        }
        for (index, limit) in self.refused {
            if let Some(outcome) = replies.outcomes.get_mut(index) {
                *outcome = Outcome::Failed(Error::ValueTooLarge(limit));
            }
        }
        for (index, version) in self.minted {
            if let Some(outcome) = replies.outcomes.get_mut(index)
                && *outcome == Outcome::Done
            {
                *outcome = Outcome::Minted(version);
            }
        }
    }
}
