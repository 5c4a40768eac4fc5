//! The README's Rust quickstart: open a deployment, store a block under its content id,
//! read it back, and look at the counters.
//!
//! `cargo run --example quickstart` (uses the embedded default deployment: a pool in
//! /dev/shm over segment files under ./cascade-data), or pass a TOML file:
//! `cargo run --example quickstart -- cascade.toml`.

use cascade::{Cascade, PutOutcome, compute_block_id};

fn main() -> cascade::Result<()> {
    let store = match std::env::args().nth(1) {
        Some(path) => Cascade::open_toml_file(path)?,
        None => Cascade::open_default()?,
    };

    let block: Vec<u8> = (0..128 * 1024).map(|i| (i % 251) as u8).collect();
    let id = compute_block_id(&block);
    let outcome = store.put(id, &block)?;
    println!("put {id}: {outcome:?}");
    assert_eq!(store.put(id, &block)?, PutOutcome::Deduplicated);

    let mut out = vec![0u8; block.len()];
    let found = store.get(id, &mut out)?;
    assert_eq!(found, Some(block.len()));
    assert_eq!(out, block);
    println!("got {} bytes back, identical", block.len());

    let stats = store.stats();
    println!(
        "blocks {}, bytes {}, dedup hits {}, tiers: {}",
        stats.blocks,
        stats.bytes,
        stats.dedup_hits,
        stats
            .tiers
            .iter()
            .map(|t| format!("{} ({})", t.name, t.kind))
            .collect::<Vec<_>>()
            .join(", ")
    );
    store.flush()
}
