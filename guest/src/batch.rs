//! Reading the capability's replies to a batch: one outcome per command,
//! each value a range of the batch's one buffer, checked to lie inside it.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::bindings::tenant_cache::cache::memcached::{Error as CapabilityError, Outcome, Replies};

/// The reply to one command, as the algorithm reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `get` found the item; its value is this range of the batch's values.
    Value(Range<usize>),
    /// `get-early` found the item near its expiry, and this reader is the
    /// one to refresh it: its value's range, and its CAS value.
    Refresh(Range<usize>, u64),
    /// `get`, `delete` (or another command that needs an item) found none.
    Miss,
    /// `set`, `add` or `delete` took effect.
    Done,
    /// `add` found an existing item and stored nothing; `set-if-cas` found
    /// it written since.
    Exists,
    /// `get-with-cas` found the item: its value's range, and its CAS value.
    ValueWithCas(Range<usize>, u64),
    /// `increment` found a value that is not a decimal number.
    NotANumber,
    /// `new-version` stored this version.
    Minted(u64),
}

/// The replies to a batch, read in command order.
pub struct Batch {
    outcomes: alloc::vec::IntoIter<Outcome>,
    values: Vec<u8>,
    /// Where the next value starts.
    next_value: usize,
}

impl Batch {
    /// The capability's replies.
    pub fn new(replies: Replies) -> Batch {
        Batch {
            outcomes: replies.outcomes.into_iter(),
            values: replies.values,
            next_value: 0,
        }
    }

    /// The reply to the next command; `None` past the last one.
    pub fn next_reply(&mut self) -> Option<Result<Reply, CapabilityError>> {
        Some(match self.outcomes.next()? {
            Outcome::Value(len) => self.value(len).map(Reply::Value),
            Outcome::Refresh(read) => self.value(read.len).map(|range| Reply::Refresh(range, read.cas)),
            Outcome::Miss => Ok(Reply::Miss),
            Outcome::Done => Ok(Reply::Done),
            Outcome::Exists => Ok(Reply::Exists),
            Outcome::ValueWithCas(read) => self.value(read.len).map(|range| Reply::ValueWithCas(range, read.cas)),
            Outcome::NotANumber => Ok(Reply::NotANumber),
            Outcome::Minted(version) => Ok(Reply::Minted(version)),
            Outcome::Failed(error) => Err(error),
        })
    }

    /// The range of the next value, `len` bytes long.
    fn value(&mut self, len: u32) -> Result<Range<usize>, CapabilityError> {
        let start = self.next_value;
        match start.checked_add(len as usize).filter(|&end| end <= self.values.len()) {
            Some(end) => {
                self.next_value = end;
                Ok(start..end)
            }
            None => Err(CapabilityError::Protocol(String::from(
                "value lengths exceed the values",
            ))),
        }
    }

    /// The bytes the `Value` replies point into.
    pub fn values(&self) -> &[u8] {
        &self.values
    }

    /// Takes the bytes the `Value` replies point into.
    pub fn into_values(self) -> Vec<u8> {
        self.values
    }

    /// Replies not read yet.
    pub fn remaining(&self) -> usize {
        self.outcomes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn batch(outcomes: Vec<Outcome>, values: &[u8]) -> Batch {
        Batch::new(Replies {
            outcomes,
            values: values.to_vec(),
        })
    }

    /// Every reply of `batch`, as text (the bindings' error has no
    /// `PartialEq`).
    fn all(mut batch: Batch) -> Vec<String> {
        core::iter::from_fn(|| batch.next_reply())
            .map(|reply| alloc::format!("{reply:?}"))
            .collect()
    }

    #[test]
    fn values_become_ranges_in_order() {
        let replies = all(batch(
            vec![
                Outcome::Value(2),
                Outcome::Miss,
                Outcome::Value(0),
                Outcome::Value(3),
                Outcome::Done,
                Outcome::Failed(CapabilityError::ValueTooLarge(9)),
            ],
            b"abcde",
        ));
        assert_eq!(
            replies,
            [
                "Ok(Value(0..2))",
                "Ok(Miss)",
                "Ok(Value(2..2))",
                "Ok(Value(2..5))",
                "Ok(Done)",
                "Err(Error::ValueTooLarge(9))",
            ]
        );
    }

    #[test]
    fn lengths_beyond_the_values_are_a_protocol_error() {
        for (outcomes, values) in [
            (vec![Outcome::Value(4)], &b"abc"[..]),
            (vec![Outcome::Value(2), Outcome::Value(2)], b"abc"),
            (vec![Outcome::Value(1), Outcome::Value(u32::MAX)], b"abc"),
        ] {
            let replies = all(batch(outcomes, values));
            assert!(
                replies
                    .last()
                    .is_some_and(|last| last.starts_with("Err(Error::Protocol")),
                "{replies:?}"
            );
        }
    }
}
