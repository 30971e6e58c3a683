//! The stored form of a namespace version: 16 lowercase hex digits
//! (fixed width, so parsing needs no overflow checks, which are slow on
//! wasm32). The component writes versions only as fresh random values; a
//! host confining a bound grant checks that what it writes as a version is
//! one the host drew.

use alloc::vec::Vec;

/// The stored form of `version`.
pub fn record_value(version: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(16);
    record.extend_from_slice(&hex_digits((version >> 32) as u32).to_le_bytes());
    record.extend_from_slice(&hex_digits(version as u32).to_le_bytes());
    record
}

/// Parses a version record; `None` for bytes that are not one.
pub fn parse_record(stored: &[u8]) -> Option<u64> {
    let (high, low) = stored.split_first_chunk::<8>()?;
    let low: &[u8; 8] = low.try_into().ok()?;
    Some(u64::from(parse_digits(*high)?) << 32 | u64::from(parse_digits(*low)?))
}

// Eight hex digits at a time, one per byte of a little-endian u64 (the
// first digit in the lowest byte, so no byte swap on wasm32): a handful of
// word operations instead of a loop.

/// Each of the eight bytes holds 0x01.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The eight lowercase hex digits of `value`, as the bytes of a
/// little-endian u64.
fn hex_digits(value: u32) -> u64 {
    // One nibble per byte, the top nibble in the lowest byte.
    let mut x = u64::from(value);
    x = (x >> 16 | x << 32) & 0x0000_FFFF_0000_FFFF;
    x = (x >> 8 | x << 16) & 0x00FF_00FF_00FF_00FF;
    x = (x >> 4 | x << 8) & 0x0F0F_0F0F_0F0F_0F0F;
    // '0' + n, plus the gap from ':' to 'a' for n >= 10 (n + 6 >= 16).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    x + b'0' as u64 * ONES + letters * (b'a' - b'9' - 1) as u64
}

/// The value of eight lowercase hex digits; `None` if any byte is not one.
fn parse_digits(digits: [u8; 8]) -> Option<u32> {
    let x = u64::from_le_bytes(digits);
    // Right for valid digits: '0'..'9' keep their low nibble, 'a'..'f'
    // (bit 6 set) add 9 to theirs. Any other byte is caught below: the
    // digits of the result differ from it.
    let mut nibbles = (x & 0x0F0F_0F0F_0F0F_0F0F) + ((x >> 6) & ONES) * 9;
    nibbles = (nibbles << 4 | nibbles >> 8) & 0x00FF_00FF_00FF_00FF;
    nibbles = (nibbles << 8 | nibbles >> 16) & 0x0000_FFFF_0000_FFFF;
    let value = (nibbles << 16 | nibbles >> 32) as u32;
    (hex_digits(value) == x).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for version in [0, 1, 42, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(parse_record(&record_value(version)), Some(version));
        }
        assert_eq!(record_value(0x2a), b"000000000000002a");
        assert_eq!(parse_record(b""), None);
        assert_eq!(parse_record(b"2a"), None);
        assert_eq!(parse_record(b"000000000000002A"), None);
        assert_eq!(parse_record(b"00000000000000g0"), None);
        assert_eq!(parse_record(b"\xff"), None);
        assert_eq!(parse_record(b"0000000000000000 "), None);
        for position in 0..16 {
            for byte in 0..=255u8 {
                let mut record = *b"0123456789abcdef";
                record[position] = byte;
                let valid = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
                assert_eq!(parse_record(&record).is_some(), valid, "byte {byte:#04x} at {position}");
            }
        }
    }

    #[test]
    fn records_are_the_plain_hex_of_the_version() {
        let mut version = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            version = version
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let expected = alloc::format!("{version:016x}");
            assert_eq!(record_value(version), expected.as_bytes());
            assert_eq!(parse_record(expected.as_bytes()), Some(version));
        }
    }
}
