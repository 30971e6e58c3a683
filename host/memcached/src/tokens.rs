//! The codes that authenticate the tokens a component hands to callers
//! (the capability's `mac`): every grantor computes them here, so a host
//! and a provider given the same secret accept each other's tokens.

use hmac::Mac;

use crate::types::Error;

/// The key that seals tokens: 32 bytes.
pub type TokenKey = [u8; 32];

/// The shortest secret a token key is derived from, in bytes.
pub const MIN_SECRET: usize = 16;

/// The token key derived from `secret` (at least [`MIN_SECRET`] bytes, or
/// `None`): every grantor given the same secret derives the same key.
pub fn key_from_secret(secret: &[u8]) -> Option<TokenKey> {
    use sha2::Digest;
    if secret.len() < MIN_SECRET {
        return None;
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"tenant-cache token secret\n");
    hasher.update(secret);
    Some(hasher.finalize().into())
}

/// The code that authenticates `message` for `route` of the application
/// whose key prefix is `prefix`: HMAC-SHA-256 under `key`, cut to 16
/// bytes.
pub fn code(key: &TokenKey, prefix: &str, route: &str, message: &[u8]) -> Result<Vec<u8>, Error> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .map_err(|_| Error::Protocol(String::from("the token key has a length HMAC refuses")))?;
    for part in [prefix.as_bytes(), b"\n", route.as_bytes(), b"\n", message] {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes()[..16].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_differ_by_key_prefix_route_and_message() {
        let key = key_from_secret(b"sixteen byte key").unwrap();
        let other = key_from_secret(b"sixteen byte kez").unwrap();
        let code =
            |key: &TokenKey, prefix: &str, route: &str, message: &[u8]| code(key, prefix, route, message).unwrap();
        let base = code(&key, "tc:a:", "t", b"m");
        assert_eq!(base.len(), 16);
        assert_eq!(base, code(&key, "tc:a:", "t", b"m"));
        for changed in [
            code(&other, "tc:a:", "t", b"m"),
            code(&key, "tc:b:", "t", b"m"),
            code(&key, "tc:a:", "u", b"m"),
            code(&key, "tc:a:", "t", b"n"),
            code(&key, "tc:a:\nt", "", b"m"),
        ] {
            assert_ne!(base, changed);
        }
        assert_eq!(key_from_secret(b"fifteen bytes!!"), None);
    }
}
