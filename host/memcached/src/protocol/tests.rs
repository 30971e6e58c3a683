//! The protocol core against byte streams memcached would send.

use memcache::exp::{MetaCommand, MetaOp};

use super::line::header;
use super::*;
use crate::types::Outcome;

const LIMITS: ReadLimits = ReadLimits {
    item_size: 1024 * 1024,
    reply_bytes: 64 * 1024 * 1024,
};

fn gets(keys: &[&str]) -> Vec<Command> {
    keys.iter().map(|key| Command::Get((*key).into())).collect()
}

fn item(ttl: Option<u32>) -> Item {
    Item {
        key: "k".into(),
        value: b"vv".to_vec(),
        ttl,
    }
}

/// The bytes `commands` (under `prefix`) are sent as, tokens from 0x1f.
fn wire(prefix: &str, commands: &[Command], own: Vec<Own>) -> String {
    let request = Request {
        groups: vec![Group {
            prefix: prefix.as_bytes().to_vec(),
            commands,
        }],
        own,
        ..Request::default()
    };
    let mut out = Vec::new();
    encode(&request, 0x1f, 1_700_000_000, &mut out);
    String::from_utf8(out).unwrap()
}

/// Feeds `reply` to an exchange for `request` in chunks of `chunk`
/// bytes, as a driver would.
fn read(request: &Request<'_>, reply: &[u8], chunk: usize, limits: ReadLimits) -> Result<(Answer, bool), Failure> {
    let mut output = Vec::new();
    let mut exchange = Exchange::new(request, 0, 0, limits, &mut output, Input::new());
    let mut rest = reply;
    while !exchange.is_done() {
        if rest.is_empty() {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let buffer = exchange.buffer();
        let take = chunk.min(rest.len()).min(buffer.len());
        buffer[..take].copy_from_slice(&rest[..take]);
        rest = &rest[take..];
        exchange.received(take)?;
    }
    let (answer, input) = exchange.finish();
    Ok((answer?, input.holds_bytes() || !rest.is_empty()))
}

fn request(commands: &[Command], own: Vec<Own>) -> Request<'_> {
    Request {
        groups: vec![Group {
            prefix: Vec::new(),
            commands,
        }],
        own,
        ..Request::default()
    }
}

#[test]
fn opaque_tokens_are_hex_and_distinct() {
    assert_eq!(opaque(0).as_slice(), b"O0");
    assert_eq!(opaque(0xab).as_slice(), b"Oab");
    assert_eq!(opaque(u64::MAX).as_slice(), b"Offffffffffffffff");
    for token in 0..5000u64 {
        assert_eq!(opaque(token).as_slice(), format!("O{token:x}").as_bytes());
    }
}

#[test]
fn commands_are_encoded_as_memcache_encodes_them() {
    let theirs = |command: MetaCommand| String::from_utf8(command.flag("O1f").encode().unwrap()).unwrap();
    let long = "k".repeat(240);
    for key in ["k", "tc:shop:d:Lisboa:/info", "~!%#:", long.as_str()] {
        assert_eq!(
            wire("", &gets(&[key]), vec![]),
            theirs(MetaCommand::new(MetaOp::Get, key).flag("v"))
        );
    }
    assert_eq!(
        wire("", &[Command::Set(item(None))], vec![]),
        theirs(MetaCommand::new(MetaOp::Set, "k").value("vv"))
    );
    assert_eq!(
        wire("", &[Command::Delete("k".into())], vec![]),
        theirs(MetaCommand::new(MetaOp::Delete, "k"))
    );
}

#[test]
fn keys_get_their_prefix_and_stores_their_ttl_and_mode() {
    assert_eq!(wire("tc:a:~1:", &gets(&["k"]), vec![]), "mg tc:a:~1:k v O1f\r\n");
    assert_eq!(
        wire("p:", &[Command::Add(item(None))], vec![]),
        "ms p:k 2 ME O1f\r\nvv\r\n"
    );
    assert_eq!(
        wire("p:", &[Command::Add(item(Some(60)))], vec![]),
        "ms p:k 2 T60 ME O1f\r\nvv\r\n"
    );
    assert_eq!(
        wire("p:", &gets(&["k"]), vec![Own::ReadPool, Own::Stats]),
        "mg p:k v O1f\r\nmg tc:pool v O20\r\nstats\r\n"
    );
    let pool = vec![
        Own::SurveyPool,
        Own::AddPool(b"r1".to_vec()),
        Own::SwapPool {
            record: b"r2".to_vec(),
            cas: 77,
        },
        Own::RemovePool { cas: 78 },
    ];
    assert_eq!(
        wire("", &[], pool),
        "mg tc:pool v c O1f\r\nms tc:pool 2 ME c O20\r\nr1\r\nms tc:pool 2 C77 c O21\r\nr2\r\nmd tc:pool C78 O22\r\n"
    );
}

#[test]
fn long_ttls_never_end_early_and_fit_memcached_field() {
    let day = 24 * 3600;
    let now = 1_700_000_000;
    assert_eq!(wire_ttl(1, now), 1);
    assert_eq!(wire_ttl(30 * day, now), u64::from(30 * day));
    assert_eq!(wire_ttl(30 * day + 1, now), now + u64::from(30 * day) + 2);
    assert_eq!(wire_ttl(365 * day, now), now + u64::from(365 * day) + 1);
    // 2031: ten years would end after 2038; the field's last second.
    let in_2031 = 1_938_000_000;
    assert_eq!(wire_ttl(315_000_000, in_2031), MAX_EXPIRY);
    // Past 2038 no absolute time fits: the longest relative TTL.
    let in_2039 = 2_180_000_000;
    assert_eq!(wire_ttl(40 * day, in_2039), 30 * u64::from(day));
    assert_eq!(wire_ttl(u32::MAX, in_2039), 30 * u64::from(day));
    // Never a value memcached would wrap or read as the past.
    for now in [0, now, in_2031, MAX_EXPIRY - 10, in_2039, u64::from(u32::MAX) + 5] {
        for secs in [1, 30 * day, 30 * day + 1, 400 * day, u32::MAX] {
            let sent = wire_ttl(secs, now);
            assert!(sent <= MAX_EXPIRY, "{secs} at {now}: {sent}");
            assert!(sent <= u64::from(30 * day) || sent > now, "{secs} at {now}: {sent}");
        }
    }
}

#[test]
fn replies_split_anywhere_are_read_whole() {
    let big: Vec<u8> = (0..20_000u32).map(|n| (n % 251) as u8).collect();
    let mut reply = b"VA 3 O0\r\nabc\r\nEN O1\r\nVA 20000 O2\r\n".to_vec();
    reply.extend_from_slice(&big);
    reply.extend_from_slice(b"\r\nVA 0 O3\r\n\r\nVA 4 O4\r\npool\r\n");
    let commands = gets(&["a", "b", "c", "d"]);
    let request = request(&commands, vec![Own::ReadPool]);
    for chunk in [1, 2, 7, 100, 5000, usize::MAX] {
        let (answer, leftover) = read(&request, &reply, chunk, LIMITS).unwrap();
        assert!(!leftover);
        assert_eq!(
            answer.replies.outcomes,
            [
                Outcome::Value(3),
                Outcome::Miss,
                Outcome::Value(20_000),
                Outcome::Value(0)
            ]
        );
        assert_eq!(&answer.replies.values[..3], b"abc");
        assert!(answer.replies.values[3..] == big[..]);
        assert_eq!(answer.own, [OwnReply::Pool(Some(b"pool".to_vec()))]);
    }
}

#[test]
fn a_value_beyond_the_item_size_limit_reads_as_a_miss() {
    let mut reply = b"VA 2000 O0\r\n".to_vec();
    reply.extend_from_slice(&[b'x'; 2000]);
    reply.extend_from_slice(b"\r\nVA 2 O1\r\nok\r\n");
    let commands = gets(&["big", "small"]);
    let limits = ReadLimits {
        item_size: 1000,
        ..LIMITS
    };
    for chunk in [3, 64, usize::MAX] {
        let (answer, leftover) = read(&request(&commands, vec![]), &reply, chunk, limits).unwrap();
        assert!(!leftover);
        assert_eq!(answer.replies.outcomes, [Outcome::Miss, Outcome::Value(2)]);
        assert_eq!(answer.replies.values, b"ok");
    }
}

#[test]
fn replies_past_the_reply_limit_fail_the_batch_and_leave_the_stream_in_step() {
    let commands = gets(&["a", "b", "c"]);
    let limits = ReadLimits {
        reply_bytes: 150,
        ..LIMITS
    };
    // The second value passes the limit: it and the third are skipped,
    // and the next batch's reply (`EN O3`) is still where it belongs.
    let value = |token: &str| {
        let mut reply = format!("VA 100 {token}\r\n").into_bytes();
        reply.extend_from_slice(&[b'x'; 100]);
        reply.extend_from_slice(b"\r\n");
        reply
    };
    let reply = [value("O0"), value("O1"), value("O2"), b"EN O3\r\n".to_vec()].concat();
    for chunk in [1, 7, usize::MAX] {
        let mut output = Vec::new();
        let mut exchange = Exchange::new(&request(&commands, vec![]), 0, 0, limits, &mut output, Input::new());
        let mut rest = &reply[..];
        while !exchange.is_done() {
            let buffer = exchange.buffer();
            let take = chunk.min(rest.len()).min(buffer.len());
            buffer[..take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            exchange.received(take).unwrap();
        }
        let (answer, input) = exchange.finish();
        assert!(matches!(answer, Err(Failure::ReplyTooLarge(150))), "{answer:?}");
        let next = gets(&["d"]);
        let mut next = Exchange::new(&request(&next, vec![]), 3, 0, LIMITS, &mut output, input);
        let buffer = next.buffer();
        buffer[..rest.len()].copy_from_slice(rest);
        next.received(rest.len()).unwrap();
        let (answer, input) = next.finish();
        assert_eq!(answer.unwrap().replies.outcomes, [Outcome::Miss], "chunks of {chunk}");
        assert!(!input.holds_bytes());
    }
}

#[test]
fn a_store_memcached_cannot_keep_fails_alone() {
    let commands = [Command::Set(item(None)), Command::Get("k".into())];
    let reply = b"SERVER_ERROR object too large for cache\r\nEN O1\r\n";
    let (answer, _) = read(&request(&commands, vec![]), reply, usize::MAX, LIMITS).unwrap();
    assert_eq!(
        answer.replies.outcomes,
        [Outcome::Failed(Error::ValueTooLarge(LIMITS.item_size)), Outcome::Miss]
    );
}

#[test]
fn own_commands_and_stats_are_answered_apart() {
    let commands = gets(&["a"]);
    let own = vec![Own::AddPool(b"r".to_vec()), Own::ReadPool, Own::Stats];
    let reply = b"EN O0\r\nNS O1\r\nEN O2\r\nSTAT pid 1\r\nSTAT curr_items 3\r\nSTAT total_items 9\r\nEND\r\n";
    let (answer, leftover) = read(&request(&commands, own), reply, 5, LIMITS).unwrap();
    assert!(!leftover);
    assert_eq!(answer.replies.outcomes, [Outcome::Miss]);
    assert_eq!(
        answer.own,
        [
            OwnReply::Stored(None),
            OwnReply::Pool(None),
            OwnReply::Stats { current: 3, total: 9 }
        ]
    );
}

#[test]
fn forged_late_or_extra_replies_are_caught() {
    let commands = gets(&["a"]);
    let request = request(&commands, vec![]);
    for forged in [
        &b"VA 6 O999\r\nforged\r\n"[..],
        b"VA 6\r\nforged\r\n",
        b"garbage\r\n",
        b"CLIENT_ERROR bad\r\n",
    ] {
        assert!(read(&request, forged, usize::MAX, LIMITS).is_err(), "{forged:?}");
    }
    let (_, leftover) = read(&request, b"EN O0\r\nEN O1\r\n", usize::MAX, LIMITS).unwrap();
    assert!(leftover, "an extra reply must mark the connection out of step");
    let long = vec![b'x'; INPUT_BUFFER + 10];
    assert!(matches!(
        read(&request, &long, usize::MAX, LIMITS),
        Err(Failure::Garbled(_))
    ));
}

#[test]
fn reply_lines_give_code_length_and_echo() {
    let read = |line: &[u8]| {
        header(line, b"O1f").map_err(|failure| match failure {
            Failure::Rejected(message) => format!("rejected {message}"),
            Failure::Garbled(what) => format!("garbled {what}"),
            Failure::Mismatch => String::from("mismatch"),
            _ => String::from("other"),
        })
    };
    assert_eq!(read(b"VA 16 O1f"), Ok((Code::Va, Some(16))));
    assert_eq!(read(b"VA  1048576 c7 O1f"), Ok((Code::Va, Some(1_048_576))));
    assert_eq!(read(b"EN O1f"), Ok((Code::En, None)));
    assert_eq!(read(b"HD c7 O1f"), Ok((Code::Hd, None)));
    assert_eq!(read(b"HD O1f c7"), Ok((Code::Hd, None)));
    assert_eq!(read(b"ERROR"), Err("rejected ERROR".into()));
    for garbled in [
        &b""[..],
        b"  ",
        b"XX O1f",
        b"VA O1f",
        b"VA -1 O1f",
        b"VA 1x O1f",
        b"VA 99999999999 O1f",
    ] {
        assert!(
            read(garbled).is_err_and(|error| error.starts_with("garbled")),
            "{garbled:?}"
        );
    }
    for mismatched in [&b"EN"[..], b"EN O1", b"EN O1f0", b"EN O1f O1f", b"VA 2 O2"] {
        assert_eq!(read(mismatched), Err("mismatch".into()), "{mismatched:?}");
    }
}

/// Random reply streams, split at random.
mod streams;
