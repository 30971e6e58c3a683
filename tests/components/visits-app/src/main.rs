//! The README's visits app ("Use from any wasi:keyvalue component"): the
//! tests run it as the README shows.

wit_bindgen::generate!({ world: "app", path: ["../../../wit/deps/keyvalue", "wit"], generate_all });

use wasi::keyvalue::{atomics, store};

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "world".into());
    let bucket = store::open("visits").expect("open the bucket");
    let visits = atomics::increment(&bucket, &name, 1).expect("count the visit");
    println!("hello {name}, visit {visits}");
}
