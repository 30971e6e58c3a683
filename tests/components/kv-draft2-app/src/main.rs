//! A wasi:keyvalue@0.2.0-draft2 app: `set B K V`, `get B K` (prints the
//! value or `(none)`), `get-many B K...`, `list B`; with `atomics`:
//! `increment B K D` (prints the new count), `visit B K N` (N increments
//! of 1, prints the last count), and `cas-add B K D N`: N times, adds D to
//! the decimal number under K (none reads as 0) with a compare-and-swap
//! loop, and prints the last value stored and how many swaps failed. A
//! keyvalue error is printed to stderr and ends the run with status 1.

mod bindings {
    wit_bindgen::generate!({
        world: "test:kv-draft2-app/app",
        path: ["../../../wit/deps/keyvalue-draft2", "wit"],
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(error) = run(&args) {
        eprintln!("kv-draft2-app: {error}");
        std::process::exit(1);
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let fail = |error: store::Error| match error {
        store::Error::NoSuchStore => String::from("no such store"),
        store::Error::AccessDenied => String::from("access denied"),
        store::Error::Other(text) => text,
    };
    let number = |text: &str| text.parse::<i64>().map_err(|error| format!("{text:?}: {error}"));
    match args {
        ["set", name, key, value] => store::open(name)
            .map_err(fail)?
            .set(key, value.as_bytes())
            .map_err(fail),
        ["get", name, key] => {
            let value = store::open(name).map_err(fail)?.get(key).map_err(fail)?;
            println!(
                "{}",
                value.map_or_else(|| "(none)".into(), |v| String::from_utf8_lossy(&v).into_owned())
            );
            Ok(())
        }
        ["get-many", name, keys @ ..] => {
            let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
            let found = batch::get_many(&store::open(name).map_err(fail)?, &keys).map_err(fail)?;
            for (key, entry) in keys.iter().zip(found) {
                match entry {
                    Some((_, value)) => println!("{key}={}", String::from_utf8_lossy(&value)),
                    None => println!("{key} (none)"),
                }
            }
            Ok(())
        }
        ["list", name] => {
            let listed = store::open(name).map_err(fail)?.list_keys(None).map_err(fail)?;
            println!("{}", listed.keys.join(" "));
            Ok(())
        }
        ["increment", name, key, delta] => {
            let bucket = store::open(name).map_err(fail)?;
            println!("{}", atomics::increment(&bucket, key, number(delta)?).map_err(fail)?);
            Ok(())
        }
        ["visit", name, key, times] => {
            let bucket = store::open(name).map_err(fail)?;
            let mut count = 0;
            for _ in 0..number(times)? {
                count = atomics::increment(&bucket, key, 1).map_err(fail)?;
            }
            println!("{count}");
            Ok(())
        }
        ["cas-add", name, key, delta, times] => {
            let bucket = store::open(name).map_err(fail)?;
            let (delta, mut last, mut failed) = (number(delta)?, 0, 0);
            for _ in 0..number(times)? {
                let mut cas = atomics::Cas::new(&bucket, key).map_err(fail)?;
                loop {
                    let current = match cas.current().map_err(fail)? {
                        Some(value) => number(&String::from_utf8_lossy(&value))?,
                        None => 0,
                    };
                    last = current + delta;
                    match atomics::swap(cas, last.to_string().as_bytes()) {
                        Ok(()) => break,
                        Err(atomics::CasError::CasFailed(fresh)) => {
                            failed += 1;
                            cas = fresh;
                        }
                        Err(atomics::CasError::StoreError(error)) => return Err(fail(error)),
                    }
                }
            }
            println!("{last} {failed}");
            Ok(())
        }
        _ => Err(format!("unknown command {args:?}")),
    }
}
