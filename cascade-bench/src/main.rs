//! `cascade-bench`: measures a Cascade deployment. Filled by the benchmark issue.

fn main() {}
