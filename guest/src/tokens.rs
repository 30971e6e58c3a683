//! Tokens the component hands to callers (`get-for-swap`'s and
//! `get-or-lease`'s) and takes back: text naming what a read found, sealed
//! with a code the host computes over it and the entry it was handed out
//! for (the capability's `mac`, under a secret the component never sees).
//!
//! A token comes back from outside, so it is input: one the component did
//! not hand out for that tenant and key (forged, altered, another key's,
//! tenant's or application's) fails to open, and nothing it names is ever
//! written. Layout: `<format><fields>.<32 hex digits of the code>`, where
//! the code covers the format, the fields and the entry's record key (which
//! names the tenant and the key).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use tenant_cache_layout::records::ReadKeys;

use crate::bindings::exports::tenant_cache::cache::tenant_cache::Error;
use crate::versions::Versions;

/// What seals a token: the capability's `mac` for a route.
pub trait Seal {
    /// The host's code for `message` on `route`.
    fn code(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, Error>;
}

/// What the code covers: the token's text, then the entry's record key.
fn message(text: &str, record: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(text.len() + 1 + record.len());
    message.extend_from_slice(text.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(record.as_bytes());
    message
}

/// `format` and `fields`, sealed for the entry of `keys`.
pub fn seal(sealer: &impl Seal, keys: &ReadKeys, format: &str, fields: &str) -> Result<String, Error> {
    seal_for(sealer, keys.tenant(), keys.data_record(), format, fields)
}

/// [`seal`] for the entry `record` on `route`.
fn seal_for(sealer: &impl Seal, route: &str, record: &str, format: &str, fields: &str) -> Result<String, Error> {
    let mut token = String::with_capacity(format.len() + fields.len() + 33);
    token.push_str(format);
    token.push_str(fields);
    let code = sealer.code(route, &message(&token, record))?;
    token.push('.');
    for byte in code {
        // Writing into a String cannot fail.
        let _ = write!(token, "{byte:02x}");
    }
    Ok(token)
}

/// The fields of `token`, if it is one of `format` that was sealed for the
/// entry of `keys`; `invalid-input` naming `what` otherwise.
pub fn open<'t>(
    sealer: &impl Seal,
    keys: &ReadKeys,
    token: &'t str,
    format: &str,
    what: &str,
) -> Result<&'t str, Error> {
    open_for(sealer, keys.tenant(), keys.data_record(), token, format, what)
}

/// [`open`] for the entry `record` on `route`.
fn open_for<'t>(
    sealer: &impl Seal,
    route: &str,
    record: &str,
    token: &'t str,
    format: &str,
    what: &str,
) -> Result<&'t str, Error> {
    let refused = || {
        Error::InvalidInput(format!(
            "{token:?} is not a token {what} handed out for this tenant and key (forged, altered, or another \
             entry's; hosts accept each other's tokens only if they share the token secret)"
        ))
    };
    let (text, code) = token.rsplit_once('.').ok_or_else(refused)?;
    let fields = text.strip_prefix(format).ok_or_else(refused)?;
    let given = hex_bytes(code).ok_or_else(refused)?;
    let expected = sealer.code(route, &message(text, record))?;
    // Compared in time independent of where they differ.
    let differs = given.len() != expected.len()
        || given
            .iter()
            .zip(&expected)
            .fold(0u8, |differs, (given, expected)| differs | (given ^ expected))
            != 0;
    if differs {
        return Err(refused());
    }
    Ok(fields)
}

/// Lowercase hex digits as bytes.
fn hex_bytes(digits: &str) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Exactly 16 lowercase hex digits, as a u64.
pub fn hex_u64(digits: &str) -> Option<u64> {
    let bytes: [u8; 8] = hex_bytes(digits)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The versions two fields of 16 hex digits name (application, tenant).
pub fn hex_versions(app: &str, tenant: &str) -> Option<Versions> {
    Some(Versions {
        app: hex_u64(app)?,
        tenant: hex_u64(tenant)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the host: a keyed checksum (not a real MAC, enough
    /// to tell what the code covers).
    struct Keyed(u8);

    impl Seal for Keyed {
        fn code(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, Error> {
            let mut code = [self.0; 16];
            for (index, byte) in route.bytes().chain([0]).chain(message.iter().copied()).enumerate() {
                code[index % 16] = code[index % 16].rotate_left(3) ^ byte;
            }
            Ok(code.to_vec())
        }
    }

    #[test]
    fn a_token_opens_only_for_its_entry_and_unaltered() {
        let host = Keyed(1);
        let token = seal_for(&host, "t", "d:t:k", "swap2:", "e:1:2").unwrap();
        assert_eq!(open_for(&host, "t", "d:t:k", &token, "swap2:", "x").ok(), Some("e:1:2"));
        let refused = |route, record, token: &str, format| {
            matches!(
                open_for(&host, route, record, token, format, "x"),
                Err(Error::InvalidInput(_))
            )
        };
        assert!(refused("t", "d:t:other", &token, "swap2:"));
        assert!(refused("u", "d:t:k", &token, "swap2:"));
        assert!(refused("t", "d:t:k", &token, "lease2:"));
        assert!(refused("t", "d:t:k", &token.replace("e:1:2", "e:1:3"), "swap2:"));
        let (text, code) = token.rsplit_once('.').unwrap();
        for forged in [
            String::from(text),
            format!("{text}."),
            format!("{text}.{}", &code[1..]),
            format!("{text}.{}", code.to_uppercase()),
            format!("{text}.{code}00"),
            String::from("swap2:e:x:x:-"),
        ] {
            assert!(refused("t", "d:t:k", &forged, "swap2:"), "{forged}");
        }
        // Another host secret: refused too.
        assert!(open_for(&Keyed(2), "t", "d:t:k", &token, "swap2:", "x").is_err());
    }

    #[test]
    fn hex_fields_are_sixteen_lowercase_digits() {
        assert_eq!(hex_u64("000000000000002a"), Some(42));
        assert_eq!(hex_u64("ffffffffffffffff"), Some(u64::MAX));
        for bad in ["", "2a", "000000000000002A", "+00000000000002a", "000000000000002a0"] {
            assert_eq!(hex_u64(bad), None, "{bad}");
        }
    }
}
