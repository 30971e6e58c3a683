//! Value framing: every stored value carries the versions it was written
//! under, so a read can tell whether it is still reachable.
//!
//! Layout: one format byte, the application version and the tenant
//! version (both little-endian u64), then the caller's bytes. An entry
//! that is a counter holds a *marker* instead (its own format byte, the
//! versions, the counter's era and whether it counts signed): the count
//! lives in the counter's record, where memcached's arithmetic reaches it.

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

/// What an entry holds, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    /// A value, written under these versions.
    Value(Versions, &'a [u8]),
    /// A counter, made under these versions.
    Counter(Versions, Counter),
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
    fn foreign_bytes_are_not_a_frame() {
        assert_eq!(unframe(b""), None);
        assert_eq!(unframe(b"short"), None);
        assert_eq!(unframe(&[0u8; 40]), None);
    }
}
