//! Value framing: every stored value carries the versions it was written
//! under, so a read can tell whether it is still reachable.
//!
//! Layout: one format byte, the application version and the tenant
//! version (both little-endian u64), then the caller's bytes. An entry
//! that is a counter holds a *marker* instead (its own format byte, the
//! versions, the counter's era and whether it counts signed): the count
//! lives in the counter's record, where memcached's arithmetic reaches it.
//! An entry whose value is being computed under a lease holds a
//! *placeholder* (its own format byte, the versions the lease was taken
//! under, the holder, and the value it replaced, if that was one).

use alloc::vec::Vec;

use crate::versions::Versions;

/// The format byte of this layout.
const FORMAT: u8 = 0xC1;

/// Bytes a frame adds in front of the value.
pub const HEADER_LEN: usize = 17;

/// Frames `value` as written under `versions`.
pub fn frame(versions: Versions, value: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(HEADER_LEN + value.len());
    framed.push(FORMAT);
    framed.extend_from_slice(&versions.app.to_le_bytes());
    framed.extend_from_slice(&versions.tenant.to_le_bytes());
    framed.extend_from_slice(value);
    framed
}

/// The format byte of a counter marker.
const MARKER: u8 = 0xC2;

/// The length of a counter marker.
const MARKER_LEN: usize = HEADER_LEN + 9;

/// A counter, as its entry's marker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// Drawn at random when the counter was made: its count's record is
    /// its own (`tenant_cache_layout::records::counter_record`).
    pub era: u64,
    /// Whether the count reads as a signed number (made by an increment
    /// on s64) or an unsigned one.
    pub signed: bool,
}

/// The marker of `counter`, made under `versions`.
pub fn marker(versions: Versions, counter: Counter) -> Vec<u8> {
    let mut marker = Vec::with_capacity(MARKER_LEN);
    marker.push(MARKER);
    marker.extend_from_slice(&versions.app.to_le_bytes());
    marker.extend_from_slice(&versions.tenant.to_le_bytes());
    marker.extend_from_slice(&counter.era.to_le_bytes());
    marker.push(u8::from(counter.signed));
    marker
}

/// The format byte of a lease placeholder.
const PLACEHOLDER: u8 = 0xC3;

/// The length of a placeholder without the value it carries.
const PLACEHOLDER_LEN: usize = HEADER_LEN + 8;

/// The holder of a placeholder given back (`release`): nobody.
pub const RELEASED: u64 = 0;

/// The placeholder of a lease taken under `versions` by `holder` (never
/// [`RELEASED`] but for a lease given back), carrying `replaced`: the
/// stored bytes of the entry it replaces if they are a value (for callers
/// that accept a stale one), else nothing.
pub fn placeholder(versions: Versions, holder: u64, replaced: &[u8]) -> Vec<u8> {
    let carried = match read(replaced) {
        Some(Stored::Value(..)) => replaced,
        // The value a placeholder carries, not the placeholder itself.
        Some(Stored::Lease { stale, .. }) => stale,
        _ => &[],
    };
    let mut stored = Vec::with_capacity(PLACEHOLDER_LEN + carried.len());
    stored.push(PLACEHOLDER);
    stored.extend_from_slice(&versions.app.to_le_bytes());
    stored.extend_from_slice(&versions.tenant.to_le_bytes());
    stored.extend_from_slice(&holder.to_le_bytes());
    stored.extend_from_slice(carried);
    stored
}

/// What an entry holds, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    /// A value, written under these versions.
    Value(Versions, &'a [u8]),
    /// A counter, made under these versions.
    Counter(Versions, Counter),
    /// A lease's placeholder: taken under `versions` by `holder`
    /// ([`RELEASED`]: given back), carrying the stored bytes of the value
    /// it replaced (`stale`, a frame, or empty).
    Lease {
        versions: Versions,
        holder: u64,
        stale: &'a [u8],
    },
}

/// Reads a stored entry; `None` for bytes that are neither a frame nor a
/// marker.
pub fn read(stored: &[u8]) -> Option<Stored<'_>> {
    if stored.first() == Some(&MARKER) && stored.len() == MARKER_LEN {
        let (versions, rest) = unframe_as(MARKER, stored)?;
        let era = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let signed = match rest[8] {
            0 => false,
            1 => true,
            _ => return None,
        };
        return Some(Stored::Counter(versions, Counter { era, signed }));
    }
    if stored.first() == Some(&PLACEHOLDER) {
        let (versions, rest) = unframe_as(PLACEHOLDER, stored)?;
        let (holder, stale) = rest.split_first_chunk::<8>()?;
        return Some(Stored::Lease {
            versions,
            holder: u64::from_le_bytes(*holder),
            stale,
        });
    }
    let (versions, value) = unframe(stored)?;
    Some(Stored::Value(versions, value))
}

/// Splits a stored frame into its versions and value; `None` for bytes
/// that are not a frame of this format.
pub fn unframe(stored: &[u8]) -> Option<(Versions, &[u8])> {
    unframe_as(FORMAT, stored)
}

/// The versions after the format byte `format`, and the bytes after them.
fn unframe_as(format: u8, stored: &[u8]) -> Option<(Versions, &[u8])> {
    let (header, value) = stored.split_at_checked(HEADER_LEN)?;
    if header[0] != format {
        return None;
    }
    let app = u64::from_le_bytes(header[1..9].try_into().ok()?);
    let tenant = u64::from_le_bytes(header[9..17].try_into().ok()?);
    Some((Versions { app, tenant }, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips() {
        let versions = Versions {
            app: u64::MAX,
            tenant: 7,
        };
        for value in [&b""[..], b"2 days", &[0u8; 300]] {
            let framed = frame(versions, value);
            assert_eq!(framed.len(), HEADER_LEN + value.len());
            assert_eq!(unframe(&framed), Some((versions, value)));
        }
    }

    #[test]
    fn a_marker_round_trips_and_is_no_value() {
        let versions = Versions { app: 1, tenant: 2 };
        for counter in [
            Counter { era: 0, signed: false },
            Counter {
                era: u64::MAX,
                signed: true,
            },
        ] {
            let marker = marker(versions, counter);
            assert_eq!(read(&marker), Some(Stored::Counter(versions, counter)));
            assert_eq!(unframe(&marker), None);
        }
        let framed = frame(versions, b"v");
        assert_eq!(read(&framed), Some(Stored::Value(versions, b"v")));
        let mut odd = marker(versions, Counter { era: 3, signed: true });
        odd[MARKER_LEN - 1] = 2;
        assert_eq!(read(&odd), None);
        odd.pop();
        assert_eq!(read(&odd), None);
    }

    #[test]
    fn a_placeholder_carries_the_value_it_replaced_and_nothing_else() {
        let old = Versions { app: 1, tenant: 2 };
        let new = Versions { app: 1, tenant: 3 };
        let value = frame(old, b"stale");
        let first = placeholder(new, 7, &value);
        assert_eq!(
            read(&first),
            Some(Stored::Lease {
                versions: new,
                holder: 7,
                stale: &value
            })
        );
        // Over another placeholder it carries that one's value, once.
        let second = placeholder(new, 8, &first);
        assert_eq!(second.len(), first.len());
        let counter = marker(old, Counter { era: 1, signed: true });
        for replaced in [&b""[..], b"junk", &counter] {
            let bare = placeholder(new, 9, replaced);
            assert_eq!(bare.len(), PLACEHOLDER_LEN);
            assert!(matches!(read(&bare), Some(Stored::Lease { stale: b"", .. })));
        }
        assert_eq!(unframe(&first), None);
        assert_eq!(read(&first[..PLACEHOLDER_LEN - 1]), None);
    }

    #[test]
    fn foreign_bytes_are_not_a_frame() {
        assert_eq!(unframe(b""), None);
        assert_eq!(unframe(b"short"), None);
        assert_eq!(unframe(&[0u8; 40]), None);
    }
}
