//! A wasi:keyvalue app, as a platform's customer would write it: it opens
//! buckets by name and knows nothing of tenants or memcached.
//!
//! `kv-app COMMAND BUCKET [ARGS...]`, one command per run:
//! - `set B K V`, `get B K` (prints the value, or `(none)`), `delete B K`,
//!   `exists B K` (prints `true` or `false`);
//! - `set-many B K=V...`, `get-many B K...` (one line per key:
//!   `K=V` or `K (none)`), `delete-many B K...`;
//! - `list B` (prints the keys, or the error);
//! - `steady B N`: one `get`, then N rounds of `set`, `get`, `exists`,
//!   `delete`, `set-many`, `get-many`, `delete-many` (the round-trip tests
//!   count what they cost); `open-many N`: opens N buckets, holding them;
//! - `exit N`: exits with status N; `trap`: traps.
//!
//! A keyvalue error is printed to stderr and ends the run with status 1.

mod bindings {
    wit_bindgen::generate!({
        world: "test:kv-app/app",
        path: ["../../../wit/deps/keyvalue", "wit"],
        generate_all,
    });
}

use bindings::wasi::keyvalue::{batch, store};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(error) = run(&args) {
        eprintln!("kv-app: {error}");
        std::process::exit(1);
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let bucket = |name: &str| store::open(name).map_err(|error| describe(&error));
    match args {
        ["set", name, key, value] => bucket(name)?.set(key, value.as_bytes()).map_err(|e| describe(&e)),
        ["get", name, key] => {
            let value = bucket(name)?.get(key).map_err(|e| describe(&e))?;
            println!("{}", show(value.as_deref()));
            Ok(())
        }
        ["delete", name, key] => bucket(name)?.delete(key).map_err(|e| describe(&e)),
        ["exists", name, key] => {
            println!("{}", bucket(name)?.exists(key).map_err(|e| describe(&e))?);
            Ok(())
        }
        ["set-many", name, entries @ ..] => {
            let entries: Vec<(String, Vec<u8>)> = entries
                .iter()
                .map(|entry| {
                    let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                    (key.to_string(), value.as_bytes().to_vec())
                })
                .collect();
            batch::set_many(&bucket(name)?, &entries).map_err(|e| describe(&e))
        }
        ["get-many", name, keys @ ..] => {
            let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
            let found = batch::get_many(&bucket(name)?, &keys).map_err(|e| describe(&e))?;
            for (key, entry) in keys.iter().zip(found) {
                match entry {
                    Some((_, value)) => println!("{key}={}", show(Some(value.as_slice()))),
                    None => println!("{key} (none)"),
                }
            }
            Ok(())
        }
        ["delete-many", name, keys @ ..] => {
            let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
            batch::delete_many(&bucket(name)?, &keys).map_err(|e| describe(&e))
        }
        ["list", name] => {
            let listed = bucket(name)?.list_keys(None).map_err(|e| describe(&e))?;
            println!("{}", listed.keys.join(" "));
            Ok(())
        }
        ["steady", name, rounds] => {
            let rounds: usize = rounds.parse().map_err(|_| format!("bad count {rounds:?}"))?;
            let bucket = bucket(name)?;
            let keys = vec![String::from("m1"), String::from("m2")];
            let entries: Vec<(String, Vec<u8>)> = keys.iter().map(|key| (key.clone(), b"v".to_vec())).collect();
            bucket.get("warm-up").map_err(|e| describe(&e))?;
            for _ in 0..rounds {
                let fail = |e: store::Error| describe(&e);
                bucket.set("k", b"v").map_err(fail)?;
                let value = bucket.get("k").map_err(fail)?;
                let exists = bucket.exists("k").map_err(fail)?;
                bucket.delete("k").map_err(fail)?;
                batch::set_many(&bucket, &entries).map_err(fail)?;
                let found = batch::get_many(&bucket, &keys).map_err(fail)?;
                batch::delete_many(&bucket, &keys).map_err(fail)?;
                if value.as_deref() != Some(&b"v"[..]) || !exists || found.iter().any(Option::is_none) {
                    return Err(String::from("a value written was not read back"));
                }
            }
            Ok(())
        }
        ["open-many", count] => {
            let count: usize = count.parse().map_err(|_| format!("bad count {count:?}"))?;
            let mut open = Vec::new();
            for n in 0..count {
                open.push(bucket(&format!("b{n}")).map_err(|error| format!("bucket {n}: {error}"))?);
            }
            println!("{} buckets open", open.len());
            Ok(())
        }
        ["exit", code] => std::process::exit(code.parse().map_err(|_| format!("bad exit status {code:?}"))?),
        ["trap"] => std::process::abort(),
        _ => Err(format!("unknown command {args:?}")),
    }
}

fn show(value: Option<&[u8]>) -> String {
    match value {
        Some(value) => String::from_utf8_lossy(value).into_owned(),
        None => String::from("(none)"),
    }
}

fn describe(error: &store::Error) -> String {
    match error {
        store::Error::NoSuchStore => String::from("no such store"),
        store::Error::AccessDenied => String::from("access denied"),
        store::Error::Other(text) => text.clone(),
    }
}
