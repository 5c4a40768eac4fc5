//! Hashing speed: the content ids (SHA-256, BLAKE3) and the per-block checksum (xxh3)
//! over the data set's blocks, on one core and on all threads.

use std::time::{Duration, Instant};

use cascade::Hasher;
use cascade::hash::{Blake3Hasher, Sha256Hasher};
use rayon::prelude::*;
use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::Dataset;
use crate::stats::{Samples, gbps};

/// At most this many bytes are hashed per repetition, so SHA-256 of a large run stays a
/// fraction of a second.
const MAX_HASHED: u64 = 256 << 20;

/// One function's figures.
#[derive(Debug, Clone, Serialize)]
pub struct HashRow {
    /// The function.
    pub name: String,
    /// What it is used for.
    pub role: String,
    /// GB/s on one thread.
    pub per_core_gbps: Samples,
    /// Threads of the second figure.
    pub threads: usize,
    /// GB/s on all threads.
    pub all_threads_gbps: Samples,
}

type HashFn = fn(&[u8]) -> u128;

fn sha256(block: &[u8]) -> u128 {
    Sha256Hasher.block_id(block).as_u128()
}

fn blake3(block: &[u8]) -> u128 {
    Blake3Hasher.block_id(block).as_u128()
}

fn xxh3(block: &[u8]) -> u128 {
    u128::from(cascade::hash::checksum(block))
}

/// Measures each function.
pub fn run(bench: &Bench, ds: &Dataset) -> Vec<HashRow> {
    let functions: [(&str, &str, HashFn); 3] = [
        ("SHA-256", "content id (compute_block_id)", sha256),
        ("BLAKE3", "content id (hasher = \"blake3\")", blake3),
        ("xxh3-64", "per-block checksum", xxh3),
    ];
    let blocks = (MAX_HASHED / ds.block_size().max(1) as u64).clamp(1, ds.blocks() as u64) as usize;
    let bytes = (blocks * ds.block_size()) as u64;
    let threads = bench.args.threads;
    let pool = bench.pools.get(threads).ok();
    let bar = bench.progress.bar("hashing", functions.len() as u64);
    let rows = functions
        .into_iter()
        .map(|(name, role, f)| {
            bar.set_message(name);
            let one = |_| gbps(bytes, time_hash(ds, blocks, f, None));
            let all = |_| gbps(bytes, time_hash(ds, blocks, f, pool.as_deref()));
            one(0);
            let per_core: Vec<f64> = (0..bench.repeat()).map(one).collect();
            all(0);
            let parallel: Vec<f64> = (0..bench.repeat()).map(all).collect();
            bar.inc(1);
            HashRow {
                name: name.into(),
                role: role.into(),
                per_core_gbps: Samples::new(per_core),
                threads,
                all_threads_gbps: Samples::new(parallel),
            }
        })
        .collect();
    bar.finish_and_clear();
    rows
}

fn time_hash(ds: &Dataset, blocks: usize, f: HashFn, pool: Option<&rayon::ThreadPool>) -> Duration {
    let start = Instant::now();
    let folded = match pool {
        None => (0..blocks)
            .map(|i| f(ds.block(i)))
            .fold(0u128, |a, h| a ^ h),
        Some(pool) => pool.install(|| {
            (0..blocks)
                .into_par_iter()
                .map(|i| f(ds.block(i)))
                .reduce(|| 0, |a, h| a ^ h)
        }),
    };
    let elapsed = start.elapsed();
    // Keeps the hashing from being optimised away.
    std::hint::black_box(folded);
    elapsed
}
