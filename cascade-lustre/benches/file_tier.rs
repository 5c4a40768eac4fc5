//! Placeholder, replaced by the measured bench.
fn main() {}
