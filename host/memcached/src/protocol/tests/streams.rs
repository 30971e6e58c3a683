//! The reply reader against random reply streams: every reply kind, split
//! at random down to one byte, with reads that would block in between,
//! and its memory bound checked after every read.

use super::*;
use crate::types::{CasItem, CounterDelta, ValueWithCas};

/// A batch, a reply stream memcached could send for it, and what it must
/// read as.
struct Case {
    commands: Vec<Command>,
    own: Vec<Own>,
    reply: Vec<u8>,
    outcomes: Vec<Outcome>,
    values: Vec<u8>,
    own_replies: Vec<OwnReply>,
    /// The bytes of values the reader keeps (against the reply limit).
    kept: u64,
}

/// A value length: mostly small, sometimes many KiB, now and then past
/// the item size limit.
fn random_len(rng: &mut impl rand::RngExt, item_size: u64) -> usize {
    match rng.random_range(0..10) {
        0 => 0,
        1..=4 => rng.random_range(1..64),
        5..=7 => rng.random_range(64..20_000),
        8 => rng.random_range(20_000..=item_size as usize),
        _ => rng.random_range(item_size as usize + 1..item_size as usize + 40_000),
    }
}

/// Value bytes, with the protocol's own words and line ends among them.
fn random_value(rng: &mut impl rand::RngExt, len: usize) -> Vec<u8> {
    let mut value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    for _ in 0..len / 50 {
        let at = rng.random_range(0..len);
        let word: &[u8] = [&b"\r\n"[..], b"END\r\n", b"EN O0\r\n", b"VA 3 O1\r\n"][rng.random_range(0..4)];
        let end = (at + word.len()).min(len);
        value[at..end].copy_from_slice(&word[..end - at]);
    }
    value
}

fn random_case(rng: &mut impl rand::RngExt, item_size: u64) -> Case {
    let mut case = Case {
        commands: Vec::new(),
        own: Vec::new(),
        reply: Vec::new(),
        outcomes: Vec::new(),
        values: Vec::new(),
        own_replies: Vec::new(),
        kept: 0,
    };
    let mut token = 0u64;
    let mut next_token = || {
        token += 1;
        format!("O{:x}", token - 1)
    };
    // Flags memcached may add, in any order around the opaque token.
    let line = |plain: bool, head: &str, token: &str| match plain {
        true => format!("{head} {token}\r\n"),
        false => format!("{head} c7 {token} t-1\r\n"),
    };
    for _ in 0..rng.random_range(0..24) {
        let token = next_token();
        let (command, head, outcome) = match rng.random_range(0..12) {
            9 => {
                // A read with the item's CAS value, as memcached sends it.
                let command = Command::GetWithCas("k".into());
                if rng.random_bool(0.2) {
                    (command, String::from("EN"), Outcome::Miss)
                } else {
                    let len = random_len(rng, item_size);
                    let value = random_value(rng, len);
                    let cas = rng.random_range(1..u64::MAX);
                    case.reply
                        .extend_from_slice(format!("VA {len} c{cas} {token}\r\n").as_bytes());
                    case.reply.extend_from_slice(&value);
                    case.reply.extend_from_slice(b"\r\n");
                    if len as u64 > item_size {
                        case.outcomes.push(Outcome::Miss);
                    } else {
                        case.outcomes
                            .push(Outcome::ValueWithCas(ValueWithCas { len: len as u32, cas }));
                        case.values.extend_from_slice(&value);
                        case.kept += len as u64;
                    }
                    case.commands.push(command);
                    continue;
                }
            }
            10 => {
                let command = Command::SetIfCas(CasItem {
                    item: item(None),
                    cas: 7,
                });
                match rng.random_range(0..3) {
                    0 => (command, String::from("EX"), Outcome::Exists),
                    1 => (command, String::from("NF"), Outcome::Miss),
                    _ => (command, String::from("HD"), Outcome::Done),
                }
            }
            11 => {
                let command = Command::Increment(CounterDelta {
                    key: "k".into(),
                    delta: 1,
                });
                match rng.random_range(0..3) {
                    0 => (command, String::from("NF"), Outcome::Miss),
                    1 => {
                        case.reply
                            .extend_from_slice(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
                        case.outcomes.push(Outcome::NotANumber);
                        case.commands.push(command);
                        continue;
                    }
                    _ => {
                        let count = rng.random_range(0..u64::MAX).to_string();
                        case.reply
                            .extend_from_slice(format!("VA {} {token}\r\n{count}\r\n", count.len()).as_bytes());
                        case.outcomes.push(Outcome::Value(count.len() as u32));
                        case.values.extend_from_slice(count.as_bytes());
                        case.kept += count.len() as u64;
                        case.commands.push(command);
                        continue;
                    }
                }
            }
            0..=3 => {
                let command = Command::Get("k".into());
                if rng.random_bool(0.2) {
                    (command, String::from("EN"), Outcome::Miss)
                } else {
                    let len = random_len(rng, item_size);
                    let value = random_value(rng, len);
                    let plain = rng.random_bool(0.5);
                    case.reply
                        .extend_from_slice(line(plain, &format!("VA {len}"), &token).as_bytes());
                    case.reply.extend_from_slice(&value);
                    case.reply.extend_from_slice(b"\r\n");
                    if len as u64 > item_size {
                        case.outcomes.push(Outcome::Miss);
                    } else {
                        case.outcomes.push(Outcome::Value(len as u32));
                        case.values.extend_from_slice(&value);
                        case.kept += len as u64;
                    }
                    case.commands.push(command);
                    continue;
                }
            }
            4..=6 => {
                let command = match rng.random_bool(0.5) {
                    true => Command::Set(item(None)),
                    false => Command::Add(item(Some(9))),
                };
                match rng.random_range(0..5) {
                    0 => (command, String::from("NS"), Outcome::Exists),
                    1 => (command, String::from("EX"), Outcome::Exists),
                    2 => {
                        case.reply
                            .extend_from_slice(b"SERVER_ERROR object too large for cache\r\n");
                        case.outcomes.push(Outcome::Failed(Error::ValueTooLarge(item_size)));
                        case.commands.push(command);
                        continue;
                    }
                    3 => {
                        case.reply
                            .extend_from_slice(b"SERVER_ERROR out of memory storing object\r\n");
                        case.outcomes.push(Outcome::Failed(Error::Protocol(String::from(
                            "memcached answered SERVER_ERROR out of memory storing object",
                        ))));
                        case.commands.push(command);
                        continue;
                    }
                    _ => (command, String::from("HD"), Outcome::Done),
                }
            }
            _ => match rng.random_bool(0.5) {
                true => (Command::Delete("k".into()), String::from("HD"), Outcome::Done),
                false => (Command::Delete("k".into()), String::from("NF"), Outcome::Miss),
            },
        };
        let plain = rng.random_bool(0.5);
        case.reply.extend_from_slice(line(plain, &head, &token).as_bytes());
        case.commands.push(command);
        case.outcomes.push(outcome);
    }
    for _ in 0..rng.random_range(0..6) {
        let token = next_token();
        match rng.random_range(0..7) {
            0 => {
                let len = rng.random_range(0..300);
                let record = random_value(rng, len);
                case.reply
                    .extend_from_slice(format!("VA {} {token}\r\n", record.len()).as_bytes());
                case.reply.extend_from_slice(&record);
                case.reply.extend_from_slice(b"\r\n");
                case.own.push(Own::ReadPool);
                case.own_replies.push(OwnReply::Pool(Some(record)));
            }
            1 => {
                case.reply.extend_from_slice(format!("EN {token}\r\n").as_bytes());
                case.own.push(Own::ReadPool);
                case.own_replies.push(OwnReply::Pool(None));
            }
            2 => {
                let cas = rng.random_range(1..u64::MAX);
                let (code, stored) = match rng.random_range(0..3) {
                    0 => ("HD", Some(cas)),
                    1 => ("EX", None),
                    _ => ("NF", None),
                };
                case.reply
                    .extend_from_slice(format!("{code} c{cas} {token}\r\n").as_bytes());
                case.own.push(Own::SwapPool {
                    record: b"r".to_vec(),
                    cas: 7,
                });
                case.own_replies.push(OwnReply::Stored(stored));
            }
            3 => {
                let record = random_value(rng, 40);
                let cas = rng.random_range(1..u64::MAX);
                case.reply
                    .extend_from_slice(format!("VA {} c{cas} {token}\r\n", record.len()).as_bytes());
                case.reply.extend_from_slice(&record);
                case.reply.extend_from_slice(b"\r\n");
                case.own.push(Own::SurveyPool);
                case.own_replies.push(OwnReply::Surveyed(Some((record, cas))));
            }
            4 => {
                case.reply.extend_from_slice(format!("EN {token}\r\n").as_bytes());
                case.own.push(Own::SurveyPool);
                case.own_replies.push(OwnReply::Surveyed(None));
            }
            5 => {
                let removed = rng.random_bool(0.5);
                let code = if removed { "HD" } else { "EX" };
                case.reply.extend_from_slice(format!("{code} {token}\r\n").as_bytes());
                case.own.push(Own::RemovePool { cas: 9 });
                case.own_replies.push(OwnReply::Removed(removed));
            }
            _ => {
                let (current, total) = (rng.random_range(0..1000), rng.random_range(1000..9999));
                case.reply.extend_from_slice(
                    format!("STAT pid 7\r\nSTAT curr_items {current}\r\nSTAT total_items {total}\r\nEND\r\n")
                        .as_bytes(),
                );
                case.own.push(Own::Stats);
                case.own_replies.push(OwnReply::Stats { current, total });
            }
        }
    }
    case
}

/// How many bytes the next read brings: one at a time often, as a slow
/// network would, otherwise a few, a buffer's worth, or all there is.
fn random_chunk(rng: &mut impl rand::RngExt) -> usize {
    match rng.random_range(0..4) {
        0 => 1,
        1 => rng.random_range(1..8),
        2 => rng.random_range(1..INPUT_BUFFER * 2),
        _ => usize::MAX,
    }
}

/// Feeds `reply` as a driver would, with reads of random sizes and, before
/// each, random extra calls to `buffer` (reads that would have blocked).
/// Checks after every read that the values hold no more memory than what
/// was announced or arrived allows.
fn read_randomly(
    rng: &mut impl rand::RngExt,
    request: &Request<'_>,
    reply: &[u8],
    limits: ReadLimits,
) -> Result<(Answer, bool), Failure> {
    let mut output = Vec::new();
    let mut exchange = Exchange::new(request, 0, 0, limits, &mut output, Input::new());
    let mut rest = reply;
    while !exchange.is_done() {
        if rest.is_empty() {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        for _ in 0..rng.random_range(0..3) {
            let _ = exchange.buffer();
        }
        let buffer = exchange.buffer();
        let take = random_chunk(rng).min(rest.len()).min(buffer.len());
        buffer[..take].copy_from_slice(&rest[..take]);
        rest = &rest[take..];
        exchange.received(take)?;
        let arrived = (reply.len() - rest.len()) as u64;
        assert!(
            exchange.held() as u64 <= limits.reply_bytes.min(4 * arrived) + 2 * INPUT_BUFFER as u64,
            "{} bytes held after {arrived} arrived",
            exchange.held()
        );
    }
    let (answer, input) = exchange.finish();
    Ok((answer?, input.holds_bytes() || !rest.is_empty()))
}

#[test]
fn any_split_of_any_reply_stream_reads_the_same() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e4a_17c0);
    let item_size = 100_000;
    for round in 0..400 {
        let case = random_case(&mut rng, item_size);
        let request = Request {
            groups: vec![Group {
                prefix: Vec::new(),
                commands: &case.commands,
            }],
            own: case.own.clone(),
            ..Request::default()
        };
        // Every other round, a reply limit the values may or may not pass.
        let reply_bytes = match round % 2 {
            0 => 64 * 1024 * 1024,
            _ => rng.random_range(0..case.kept.max(1) * 2),
        };
        let limits = ReadLimits { item_size, reply_bytes };
        let result = read_randomly(&mut rng, &request, &case.reply, limits);
        if case.kept > reply_bytes {
            assert!(
                matches!(result, Err(Failure::ReplyTooLarge(limit)) if limit == reply_bytes),
                "round {round}: {:?}",
                result.map(|(answer, _)| answer.replies.outcomes)
            );
            continue;
        }
        let (answer, leftover) = result.unwrap_or_else(|failure| {
            panic!(
                "round {round}: {failure:?} {:?} {:?}",
                case.outcomes,
                String::from_utf8_lossy(&case.reply[case.reply.len().saturating_sub(300)..])
            )
        });
        assert!(!leftover, "round {round}");
        assert_eq!(answer.replies.outcomes, case.outcomes, "round {round}");
        assert!(answer.replies.values == case.values, "round {round}: values differ");
        assert_eq!(answer.own, case.own_replies, "round {round}");
    }
}

#[test]
fn memory_grows_with_the_bytes_that_arrive_not_with_the_length_announced() {
    let commands = gets(&["huge"]);
    let request = request(&commands, vec![]);
    let limits = ReadLimits {
        item_size: 1 << 30,
        reply_bytes: 64 << 20,
    };
    let mut output = Vec::new();
    let mut exchange = Exchange::new(&request, 0, 0, limits, &mut output, Input::new());
    let header = b"VA 60000000 O0\r\n";
    exchange.buffer()[..header.len()].copy_from_slice(header);
    exchange.received(header.len()).unwrap();
    // A slow server: one byte at a time, and reads that would block.
    for _ in 0..10_000 {
        for _ in 0..3 {
            let _ = exchange.buffer();
        }
        exchange.buffer()[0] = b'x';
        exchange.received(1).unwrap();
    }
    assert!(
        exchange.held() <= 4 * 10_000 + 2 * INPUT_BUFFER,
        "{} bytes held",
        exchange.held()
    );
}
