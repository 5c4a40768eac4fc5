//! Gives libcascade_c.so a SONAME, so programs linked against it record the library's
//! name rather than the path it was found at when they were linked.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcascade_c.so");
    }
}
