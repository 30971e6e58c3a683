// src/main.rs; Cargo.toml: wit-bindgen = "0.63"
// wit/app.wit: package example:visits;
//              world app {
//                  import wasi:keyvalue/store@0.2.0-draft;
//                  import wasi:keyvalue/atomics@0.2.0-draft;
//              }
// with the proposal's WIT in wit/deps/keyvalue (a copy of this repository's)
wit_bindgen::generate!({ world: "app", path: "wit", generate_all });

use wasi::keyvalue::{atomics, store};

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "world".into());
    let bucket = store::open("visits").expect("open the bucket");
    let visits = atomics::increment(&bucket, &name, 1).expect("count the visit");
    println!("hello {name}, visit {visits}");
}
