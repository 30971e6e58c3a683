//! How tenants, keys and application names become *parts* of memcached
//! keys: printable ASCII that never holds `:`, so parts joined by `:` split
//! back unambiguously and the mapping from (tenant, key) to memcached key
//! is injective.
//!
//! - Short parts are percent-encoded with [`ESCAPED`]: every byte outside
//!   `!`..`~`, and the reserved `%`, `:` and `#`, becomes `%XX`.
//! - A part whose encoding would exceed [`MAX_PART`] bytes becomes `#`
//!   followed by the hex SHA-256 of the raw string. `#` never starts (or
//!   appears in) a percent-encoded part, so hashed and plain parts cannot
//!   collide; two long strings collide only if SHA-256 does.

use alloc::string::String;
use core::fmt::Write;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// Bytes a part never holds as they are, written `%XX` instead: controls,
/// space and DEL (memcached's text protocol cannot carry them), `%` (the
/// escape itself), `:` (the separator) and `#` (which starts a hashed
/// part). Bytes above 0x7f are always escaped.
pub const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b':').add(b'#');

/// The longest encoded tenant or key part, in bytes.
pub const MAX_PART: usize = 96;

/// Whether `raw` stands for itself as a part: no byte of it is escaped.
/// (One pass, no allocation.)
pub fn is_plain(raw: &str) -> bool {
    // The encoder yields runs of `raw` left as they are and escapes; `raw`
    // is plain when the first run is all of it.
    match utf8_percent_encode(raw, ESCAPED).next() {
        None => true,
        Some(run) => core::ptr::eq(run, raw),
    }
}

/// Appends the escaped form of `raw` to `out`, unless it would make what
/// was appended longer than `max` bytes: then `out` is left as it was and
/// the answer is `false` (the caller hashes `raw` instead).
pub fn push_escaped(out: &mut String, raw: &str, max: usize) -> bool {
    let start = out.len();
    for chunk in utf8_percent_encode(raw, ESCAPED) {
        out.push_str(chunk);
        if out.len() - start > max {
            out.truncate(start);
            return false;
        }
    }
    true
}

/// The part of one tenant or key (see the module docs).
pub fn encode_part(raw: &str) -> String {
    let mut part = String::with_capacity(raw.len().min(MAX_PART));
    push_part(&mut part, raw);
    part
}

/// Appends the part of `raw` to `out`.
pub fn push_part(out: &mut String, raw: &str) {
    // The common case, a short plain string, is its own part.
    if raw.len() <= MAX_PART && is_plain(raw) {
        out.push_str(raw);
    } else if !push_escaped(out, raw, MAX_PART) {
        push_hashed(out, raw);
    }
}

fn push_hashed(out: &mut String, raw: &str) {
    let digest = Sha256::digest(raw.as_bytes());
    out.push('#');
    for byte in digest {
        // Writing into a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(raw: &str) -> String {
        let mut out = String::new();
        assert!(push_escaped(&mut out, raw, usize::MAX));
        out
    }

    #[test]
    fn reserved_and_invisible_bytes_are_escaped() {
        assert_eq!(escaped("Lisboa"), "Lisboa");
        assert_eq!(escaped(""), "");
        assert_eq!(escaped("a b"), "a%20b");
        assert_eq!(escaped("x\r\ny"), "x%0D%0Ay");
        assert_eq!(escaped("a:1/x%#"), "a%3A1/x%25%23");
        assert_eq!(escaped("\u{7f}é"), "%7F%C3%A9");
        for byte in 0..=0x7fu8 {
            let plain = (b'!'..=b'~').contains(&byte) && !b"%:#".contains(&byte);
            let text = alloc::format!("a{}b", char::from(byte));
            assert_eq!(is_plain(&text), plain, "{byte:#04x}");
        }
        assert!(is_plain("") && is_plain("/page/7") && !is_plain("é"));
        assert!(!is_plain(" ab") && !is_plain("ab ") && !is_plain("%"));
        assert_eq!(encode_part("Lisboa"), "Lisboa");
        assert_eq!(encode_part("x\r\ny"), "x%0D%0Ay");
        assert_eq!(encode_part("é"), "%C3%A9");
    }

    #[test]
    fn too_long_leaves_the_output_as_it_was() {
        let mut out = String::from("d:");
        assert!(!push_escaped(&mut out, "ééé", 17));
        assert_eq!(out, "d:");
        assert!(push_escaped(&mut out, "ééé", 18));
        assert_eq!(out, "d:%C3%A9%C3%A9%C3%A9");
    }

    #[test]
    fn long_parts_are_hashed_not_truncated() {
        let long_a = "x".repeat(100_000);
        let mut long_b = long_a.clone();
        long_b.push('y');
        let a = encode_part(&long_a);
        let b = encode_part(&long_b);
        assert!(a.starts_with('#') && a.len() == 65);
        assert_ne!(a, b);
        // An encoding that just exceeds the limit is hashed too.
        assert!(encode_part(&"é".repeat(17)).starts_with('#'));
        assert_eq!(encode_part(&"z".repeat(MAX_PART)), "z".repeat(MAX_PART));
        assert!(encode_part(&"z".repeat(MAX_PART + 1)).starts_with('#'));
    }
}
