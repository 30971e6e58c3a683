//! A 32 KiB stack instead of wasm-ld's 1 MiB default: the component never
//! recurses deeply, and a small stack keeps the memory a call touches
//! compact, which makes fresh instances cheap (fewer pages to fault in).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=32768");
    }
}
