//! Hashing speed: the content ids (SHA-256, BLAKE3) and the per-block checksum (xxh3)
//! over the data set's blocks, on one core and on all threads.

use std::time::{Duration, Instant};

use cascade::Hasher;
use cascade::hash::{self, Blake3Hasher, Sha256Hasher};
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
    /// GB/s on all threads, through the crate's batch call (`hash_batch`, `checksum_batch`).
    pub all_threads_gbps: Samples,
}

/// Which function a row measures.
#[derive(Debug, Clone, Copy)]
enum Function {
    Sha256,
    Blake3,
    Xxh3,
}

impl Function {
    fn one(self, block: &[u8]) -> u128 {
        match self {
            Function::Sha256 => Sha256Hasher.block_id(block).as_u128(),
            Function::Blake3 => Blake3Hasher.block_id(block).as_u128(),
            Function::Xxh3 => u128::from(hash::checksum(block)),
        }
    }

    /// The crate's batch entry point (parallel on the current rayon pool).
    fn batch(self, blocks: &[&[u8]]) -> u128 {
        match self {
            Function::Sha256 => fold(
                hash::hash_batch(&Sha256Hasher, blocks)
                    .iter()
                    .map(|id| id.as_u128()),
            ),
            Function::Blake3 => fold(
                hash::hash_batch(&Blake3Hasher, blocks)
                    .iter()
                    .map(|id| id.as_u128()),
            ),
            Function::Xxh3 => fold(hash::checksum_batch(blocks).into_iter().map(u128::from)),
        }
    }
}

fn fold(values: impl Iterator<Item = u128>) -> u128 {
    values.fold(0, |a, v| a ^ v)
}

/// Measures each function.
pub fn run(bench: &Bench, ds: &Dataset) -> Vec<HashRow> {
    let sha = if hash::sha_ni_detected() {
        "SHA-NI"
    } else {
        "no SHA-NI on this CPU"
    };
    let functions = [
        (
            "SHA-256",
            format!("content id (compute_block_id), {sha}"),
            Function::Sha256,
        ),
        (
            "BLAKE3",
            "content id (hasher = \"blake3\")".to_string(),
            Function::Blake3,
        ),
        ("xxh3-64", "per-block checksum".to_string(), Function::Xxh3),
    ];
    let count = (MAX_HASHED / ds.block_size().max(1) as u64).clamp(1, ds.blocks() as u64) as usize;
    let blocks: Vec<&[u8]> = (0..count).map(|i| ds.block(i)).collect();
    let bytes = (count * ds.block_size()) as u64;
    let threads = bench.args.threads;
    let pool = bench.pools.get(threads).ok();
    let bar = bench.progress.bar("hashing", functions.len() as u64);
    let rows = functions
        .into_iter()
        .map(|(name, role, f)| {
            bar.set_message(name);
            let one = |_| gbps(bytes, time(|| fold(blocks.iter().map(|b| f.one(b)))));
            let all = |_| match &pool {
                Some(pool) => gbps(bytes, time(|| pool.install(|| f.batch(&blocks)))),
                None => 0.0,
            };
            one(0);
            let per_core: Vec<f64> = (0..bench.repeat()).map(one).collect();
            all(0);
            let parallel: Vec<f64> = (0..bench.repeat()).map(all).collect();
            bar.inc(1);
            HashRow {
                name: name.into(),
                role,
                per_core_gbps: Samples::new(per_core),
                threads,
                all_threads_gbps: Samples::new(parallel),
            }
        })
        .collect();
    bar.finish_and_clear();
    rows
}

fn time(work: impl FnOnce() -> u128) -> Duration {
    let start = Instant::now();
    // black_box keeps the hashing from being optimised away.
    std::hint::black_box(work());
    start.elapsed()
}
