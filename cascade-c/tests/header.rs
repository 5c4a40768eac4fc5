//! include/cascade.h is what cbindgen makes from the crate today.

mod support {
    pub mod header;
}

#[test]
fn header_is_current() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let expected = support::header::generate(crate_dir).expect("cbindgen runs");
    let path = crate_dir.join("../include/cascade.h");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == expected,
        "{} is out of date: run `cargo run -p cascade-c --example generate_header` and commit it",
        path.display()
    );
}
