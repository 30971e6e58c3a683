//! An app that increments a counter with `wasi:keyvalue/atomics`, an
//! interface tenant-cache does not serve.

mod bindings {
    wit_bindgen::generate!({
        world: "wasi:keyvalue/imports@0.2.0-draft",
        path: "../../../wit/deps/keyvalue",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

fn main() {
    let bucket = store::open("counters").expect("open");
    let count = atomics::increment(&bucket, "visits", 1).expect("increment");
    println!("{count}");
}
