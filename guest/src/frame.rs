//! Value framing: every stored value carries the versions it was written
//! under, so a read can tell whether it is still reachable.
//!
//! Layout: one format byte, the application version and the tenant
//! version (both little-endian u64), then the caller's bytes.

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

/// Splits a stored frame into its versions and value; `None` for bytes
/// that are not a frame of this format.
pub fn unframe(stored: &[u8]) -> Option<(Versions, &[u8])> {
    let (header, value) = stored.split_at_checked(HEADER_LEN)?;
    if header[0] != FORMAT {
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
    fn foreign_bytes_are_not_a_frame() {
        assert_eq!(unframe(b""), None);
        assert_eq!(unframe(b"short"), None);
        assert_eq!(unframe(&[0u8; 40]), None);
    }
}
