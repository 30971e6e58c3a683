//! How tenants, keys and application names become *parts* of memcached
//! keys: printable ASCII that never holds `:`, so parts joined by `:` split
//! back unambiguously. The component escapes tenants and keys with it, the
//! host the application name of its prefix.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

use alloc::string::String;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Bytes a part never holds as they are, written `%XX` instead: controls,
/// space and DEL (memcached's text protocol cannot carry them), `%` (the
/// escape itself), `:` (the separator) and `#` (which starts a hashed
/// part). Bytes above 0x7f are always escaped.
pub const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b':').add(b'#');

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
    }

    #[test]
    fn too_long_leaves_the_output_as_it_was() {
        let mut out = String::from("d:");
        assert!(!push_escaped(&mut out, "ééé", 17));
        assert_eq!(out, "d:");
        assert!(push_escaped(&mut out, "ééé", 18));
        assert_eq!(out, "d:%C3%A9%C3%A9%C3%A9");
    }
}
