//! Names derived from content: a long application name, a compiled
//! artifact.

use sha2::{Digest, Sha256};

/// The first 128 bits of the SHA-256 of `bytes`, as 32 hex digits.
pub fn short_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
