//! One reply line of the meta protocol, read without allocating: its
//! code, the length of its value, the opaque token it echoes, its CAS
//! value.

use super::reply::Failure;

/// A reply line's code. Ours rather than the `memcache` crate's
/// `Code`: that crate pulls a URL parser and Unicode tables into the
/// provider component (a dozen crates, most of its build) for these eight
/// names, and allocates a message for an unknown one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// `HD`: success without a value.
    Hd,
    /// `VA`: success with a value.
    Va,
    /// `EN`: a miss.
    En,
    /// `NS`: not stored.
    Ns,
    /// `EX`: exists (a CAS value that no longer matches).
    Ex,
    /// `NF`: not found.
    Nf,
    /// `MN`: the no-op marker.
    Mn,
    /// `ME`: a debug line.
    Me,
}

impl Code {
    /// The code `token` names, if it names one.
    pub fn from_wire(token: &[u8]) -> Option<Code> {
        Some(match token {
            b"HD" => Code::Hd,
            b"VA" => Code::Va,
            b"EN" => Code::En,
            b"NS" => Code::Ns,
            b"EX" => Code::Ex,
            b"NF" => Code::Nf,
            b"MN" => Code::Mn,
            b"ME" => Code::Me,
            _ => return None,
        })
    }
}

/// Reads a reply line: its code and, for `VA`, the data length. The line
/// must carry exactly one opaque token, `opaque`. Error lines fail the
/// batch (`SERVER_ERROR` lines as `Rejected`, which the caller may take as
/// one command's failure).
pub fn header(line: &[u8], opaque: &[u8]) -> Result<(Code, Option<usize>), Failure> {
    // What memcached sends for our commands, `XX[ LENGTH] OPAQUE`, read
    // without splitting the line; anything else goes the general way.
    let usual = line
        .strip_suffix(opaque)
        .and_then(|rest| rest.strip_suffix(b" "))
        .and_then(|rest| match rest {
            [b'V', b'A', b' ', digits @ ..] => Some((Code::Va, Some(length(digits)?))),
            [_, _] => Some((Code::from_wire(rest)?, None)),
            _ => None,
        });
    match usual {
        Some((Code::Va, None)) | None => any_header(line, opaque),
        Some(usual) => Ok(usual),
    }
}

/// [`header`] for any reply line: tokens separated by spaces, flags in any
/// order.
fn any_header(line: &[u8], opaque: &[u8]) -> Result<(Code, Option<usize>), Failure> {
    let mut tokens = Tokens(line);
    let first = tokens.next().ok_or(Failure::Garbled("an empty reply line"))?;
    let code = match first {
        b"SERVER_ERROR" | b"CLIENT_ERROR" | b"ERROR" => {
            return Err(Failure::Rejected(String::from_utf8_lossy(line).trim().to_owned()));
        }
        code => Code::from_wire(code).ok_or(Failure::Garbled(
            "an unknown reply code (is this a memcached server, 1.6 or later?)",
        ))?,
    };
    let len = match code {
        Code::Va => Some(
            tokens
                .next()
                .and_then(length)
                .ok_or(Failure::Garbled("a VA reply without a length"))?,
        ),
        _ => None,
    };
    let mut opaques = tokens.filter(|flag| flag.first() == Some(&b'O'));
    if opaques.next() != Some(opaque) || opaques.next().is_some() {
        return Err(Failure::Mismatch);
    }
    Ok((code, len))
}

/// The CAS value a reply line carries (its `c` flag), if any.
pub fn cas(line: &[u8]) -> Option<u64> {
    // Up to 20 digits: memcached's CAS values are 64-bit counters.
    Tokens(line).skip(1).find_map(|flag| {
        let digits = flag.strip_prefix(b"c")?;
        match digits.iter().all(u8::is_ascii_digit) {
            true => std::str::from_utf8(digits).ok()?.parse().ok(),
            false => None,
        }
    })
}

/// The space-separated tokens of a reply line.
pub struct Tokens<'a>(pub &'a [u8]);

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.0;
        let mut start = 0;
        while start < line.len() && line[start] == b' ' {
            start += 1;
        }
        let mut end = start;
        while end < line.len() && line[end] != b' ' {
            end += 1;
        }
        self.0 = &line[end..];
        (end > start).then(|| &line[start..end])
    }
}

/// A data length: decimal digits, at most ten (memcached's items are at
/// most 1 GiB).
fn length(digits: &[u8]) -> Option<usize> {
    if digits.len() > 10 {
        return None;
    }
    number(digits).and_then(|number| usize::try_from(number).ok())
}

/// Decimal digits, at most nineteen.
pub fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |number, &digit| number * 10 + u64::from(digit - b'0')),
    )
}
