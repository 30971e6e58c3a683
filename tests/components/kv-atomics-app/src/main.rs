//! A wasi:keyvalue@0.2.0-draft app that counts with `atomics`:
//! `visit B K N` increments K by 1, N times, and prints the last count;
//! `increment B K D` prints the new count; `get B K` prints the value or
//! `(none)`. A keyvalue error is printed to stderr and ends the run with
//! status 1.

mod bindings {
    wit_bindgen::generate!({
        world: "wasi:keyvalue/imports@0.2.0-draft",
        path: "../../../wit/deps/keyvalue",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(error) = run(&args) {
        eprintln!("kv-atomics-app: {error}");
        std::process::exit(1);
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let fail = |error: store::Error| match error {
        store::Error::NoSuchStore => String::from("no such store"),
        store::Error::AccessDenied => String::from("access denied"),
        store::Error::Other(text) => text,
    };
    let number = |text: &str| text.parse::<u64>().map_err(|error| format!("{text:?}: {error}"));
    match args {
        ["visit", name, key, times] => {
            let bucket = store::open(name).map_err(fail)?;
            let mut count = 0;
            for _ in 0..number(times)? {
                count = atomics::increment(&bucket, key, 1).map_err(fail)?;
            }
            println!("{count}");
            Ok(())
        }
        ["increment", name, key, delta] => {
            let bucket = store::open(name).map_err(fail)?;
            println!("{}", atomics::increment(&bucket, key, number(delta)?).map_err(fail)?);
            Ok(())
        }
        ["get", name, key] => {
            let value = store::open(name).map_err(fail)?.get(key).map_err(fail)?;
            println!(
                "{}",
                value.map_or_else(|| "(none)".into(), |v| String::from_utf8_lossy(&v).into_owned())
            );
            Ok(())
        }
        _ => Err(format!("unknown command {args:?}")),
    }
}
