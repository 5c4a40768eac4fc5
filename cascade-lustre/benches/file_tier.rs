//! Warm-cache micro-benchmarks of the file tier: batches of 64 blocks of 128 KiB.
//!
//! `cargo bench -p cascade-lustre --bench file_tier`. Cold reads and the baselines are
//! in `examples/file_tier_bench.rs`, which drops the page cache between phases.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::time::{Duration, Instant};

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, Tier};
use cascade_lustre::{FileTier, FileTierConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 128 << 10;
const BATCH: usize = 64;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FileTierConfig::new(dir.path());
    config.capacity = ByteSize::gib(8);
    let tier = FileTier::open("bench", &config).unwrap();
    let inputs: Vec<Vec<u8>> = (0..BATCH).map(|n| vec![n as u8 ^ 0x5A; BLOCK]).collect();
    let mut outputs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BLOCK]).collect();
    let mut group = c.benchmark_group("file_tier");
    group.throughput(Throughput::Bytes((BLOCK * BATCH) as u64));
    let mut round = 0u128;
    group.bench_function("put_batch 64 x 128 KiB", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let items: Vec<(BlockId, &[u8])> = inputs
                    .iter()
                    .enumerate()
                    .map(|(n, d)| (BlockId::from_u128(round << 16 | n as u128), d.as_slice()))
                    .collect();
                let started = Instant::now();
                for result in tier.put_batch(&items) {
                    result.unwrap();
                }
                spent += started.elapsed();
                // Keep the directory small: the space is reclaimed by compaction.
                for (id, _) in &items {
                    tier.remove(*id).unwrap();
                }
            }
            spent
        });
    });
    let ids: Vec<BlockId> = (0..BATCH)
        .map(|n| BlockId::from_u128(n as u128 + 1))
        .collect();
    let items: Vec<(BlockId, &[u8])> = ids
        .iter()
        .zip(&inputs)
        .map(|(id, d)| (*id, d.as_slice()))
        .collect();
    for result in tier.put_batch(&items) {
        result.unwrap();
    }
    group.bench_function("get_batch 64 x 128 KiB (page cache warm)", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let mut requests: Vec<(BlockId, &mut [u8])> = ids
                    .iter()
                    .zip(outputs.iter_mut())
                    .map(|(id, o)| (*id, o.as_mut_slice()))
                    .collect();
                for result in tier.get_batch(&mut requests) {
                    assert_eq!(result.unwrap(), BLOCK);
                }
            }
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
