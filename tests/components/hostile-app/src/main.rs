//! A hostile app: it imports the memcached capability directly, as a
//! composed app does, and tries everything a bound grant must refuse.
//!
//! `hostile-app OWN VICTIM [OLD-VERSION]`: OWN is the tenant the app
//! believes it is bound to, VICTIM another tenant of the application, and
//! OLD-VERSION a version record of OWN from before a clear (16 hex
//! digits), which it tries to restore. One line per attempt:
//! `NAME: denied`, `NAME: allowed`, or `NAME: failed (ERROR)`; a first
//! line `own: ...` shows it can use its own records.

mod bindings {
    wit_bindgen::generate!({
        world: "test:hostile-app/app",
        path: ["../../../wit", "wit"],
        generate_all,
    });
}

use bindings::tenant_cache::cache::memcached::{
    self, CasItem, Command, CounterDelta, Error, Item, NewVersion, Outcome, VersionWrite,
};

fn item(key: &str, value: &[u8], ttl: Option<u32>) -> Item {
    Item {
        key: key.into(),
        value: value.to_vec(),
        ttl,
    }
}

/// A version record, as tenant-cache stores one.
fn record(version: u64) -> Vec<u8> {
    format!("{version:016x}").into_bytes()
}

fn report(name: &str, result: Result<String, Error>) {
    match result {
        Err(Error::Denied(_)) => println!("{name}: denied"),
        Ok(detail) => println!("{name}: allowed {detail}"),
        Err(other) => println!("{name}: failed ({other:?})"),
    }
}

/// Runs one batch; what came back, as text.
fn execute(route: &str, commands: &[Command]) -> Result<String, Error> {
    let replies = memcached::execute(route, commands)?;
    let mut values = replies.values.as_slice();
    let mut shown = Vec::new();
    for outcome in replies.outcomes {
        shown.push(match outcome {
            Outcome::Value(len) => {
                let (value, rest) = values.split_at(len as usize);
                values = rest;
                format!("value {}", String::from_utf8_lossy(value))
            }
            other => format!("{other:?}"),
        });
    }
    Ok(shown.join(", "))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [own, victim, rest @ ..] = args.as_slice() else {
        eprintln!("usage: hostile-app OWN VICTIM [OLD-VERSION]");
        std::process::exit(2);
    };
    let (own_version, own_entry) = (format!("n:{own}"), format!("d:{own}:probe"));
    let (victim_version, victim_entry) = (format!("n:{victim}"), format!("d:{victim}:k"));
    println!("bound: {:?}", memcached::bound_tenant());
    // Its own records work: the app is not refused wholesale.
    report(
        "own",
        execute(
            own,
            &[
                Command::Set(item(&own_entry, b"mine", None)),
                Command::Get(own_entry.clone()),
                Command::Get(own_version.clone()),
                Command::Get("a".into()),
            ],
        ),
    );
    report(
        "read-victim-entry",
        execute(victim, &[Command::Get(victim_entry.clone())]),
    );
    report(
        "read-victim-entry-from-own-route",
        execute(own, &[Command::Get(victim_entry.clone())]),
    );
    report(
        "read-victim-version",
        execute(victim, &[Command::Get(victim_version.clone())]),
    );
    report(
        "forge-victim-entry",
        execute(victim, &[Command::Set(item(&victim_entry, b"forged", None))]),
    );
    report(
        "delete-victim-entry",
        execute(victim, &[Command::Delete(victim_entry.clone())]),
    );
    let fresh = memcached::random_u64();
    report(
        "clear-victim",
        execute(victim, &[Command::Set(item(&victim_version, &record(fresh), None))]),
    );
    let fresh = memcached::random_u64();
    report(
        "clear-victim-from-own-route",
        execute(own, &[Command::Set(item(&victim_version, &record(fresh), None))]),
    );
    let fresh = memcached::random_u64();
    report(
        "broadcast-app-version",
        memcached::broadcast(&[Command::Set(item("a", &record(fresh), None))]).map(|_| String::new()),
    );
    let fresh = memcached::random_u64();
    report(
        "set-app-version",
        execute(own, &[Command::Set(item("a", &record(fresh), None))]),
    );
    report("delete-app-version", execute(own, &[Command::Delete("a".into())]));
    report(
        "add-app-version-chosen",
        execute(own, &[Command::Add(item("a", &record(42), None))]),
    );
    let fresh = memcached::random_u64();
    report(
        "add-app-version-expiring",
        execute(own, &[Command::Add(item("a", &record(fresh), Some(1)))]),
    );
    report(
        "own-version-chosen",
        execute(own, &[Command::Set(item(&own_version, &record(42), None))]),
    );
    if let Some(old) = rest.first() {
        report(
            "restore-own-version",
            execute(own, &[Command::Set(item(&own_version, old.as_bytes(), None))]),
        );
    }
    // The commands of counters and compare-and-swap obey the same rules.
    report(
        "read-victim-entry-with-cas",
        execute(own, &[Command::GetWithCas(victim_entry.clone())]),
    );
    let increment = |key: &str| {
        Command::Increment(CounterDelta {
            key: key.into(),
            delta: 1,
        })
    };
    report(
        "increment-victim-count",
        execute(
            victim,
            &[increment(&format!("c:{victim}:00000000000000000000000000000000"))],
        ),
    );
    report("increment-app-version", execute(own, &[increment("a")]));
    report("increment-own-version", execute(own, &[increment(&own_version)]));
    report(
        "swap-own-version",
        execute(
            own,
            &[Command::SetIfCas(CasItem {
                item: item(&own_version, &record(42), None),
                cas: 1,
            })],
        ),
    );
    // Versions the host draws: never another tenant's, never the
    // application version but where missing.
    let new_version = |key: &str, write| Command::NewVersion(NewVersion { key: key.into(), write });
    report(
        "new-version-victim",
        execute(victim, &[new_version(&victim_version, VersionWrite::Overwrite)]),
    );
    report(
        "new-version-app-version",
        execute(own, &[new_version("a", VersionWrite::Overwrite)]),
    );
    // A version known before it is stored could have entries planted
    // under it in advance, to come back after the operator's clear: a
    // value drawn and written later is refused like any chosen one.
    let drawn = memcached::random_u64();
    report(
        "own-version-drawn-in-advance",
        execute(own, &[Command::Set(item(&own_version, &record(drawn), None))]),
    );
    report(
        "mac-victim-route",
        memcached::mac(victim, b"swap2:e").map(|_| String::from("a code")),
    );
    report(
        "pool-record",
        execute(
            own,
            &[Command::Set(item("~pool", b"x", None)), Command::Get("tc:pool".into())],
        ),
    );
    let recalled = memcached::memo_get(victim);
    println!("memo-victim: {}", if recalled.is_some() { "recalled" } else { "none" });
    memcached::memo_put(victim, Some(&record(42)[..8]));
}
