//! Warm-cache micro-benchmarks of the file tier: batches of 64 blocks of 128 KiB.
//!
//! `cargo bench -p cascade-lustre --bench file_tier`. Cold reads and the baselines are
//! in `examples/file_tier_bench.rs` and `cascade-bench --section file`, which drop the
//! page cache between phases. Also the cost of `refresh` on a directory another writer
//! shares.
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

/// Blocks of the other writer's directory in the refresh benchmarks, in segments of
/// `REFRESH_SEGMENT_MIB` MiB (small blocks, so the directory has many records and segments).
const REFRESH_BLOCKS: usize = 20_000;
const REFRESH_BLOCK: usize = 4032;
const REFRESH_SEGMENT_MIB: u64 = 4;

fn refresh(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = |writer: &str| {
        let mut config = FileTierConfig::new(dir.path());
        config.capacity = ByteSize::gib(8);
        config.segment_size = ByteSize::mib(REFRESH_SEGMENT_MIB);
        config.writer_id = Some(writer.into());
        config
    };
    let writer = FileTier::open("a", &config("a")).unwrap();
    let block = vec![7u8; REFRESH_BLOCK];
    let ids: Vec<BlockId> = (0..REFRESH_BLOCKS as u128)
        .map(|n| BlockId::from_u128(n + 1))
        .collect();
    for chunk in ids.chunks(1024) {
        let items: Vec<(BlockId, &[u8])> = chunk.iter().map(|id| (*id, block.as_slice())).collect();
        for result in writer.put_batch(&items) {
            result.unwrap();
        }
    }
    // A few removals, so the delete log has entries to read again.
    for id in ids.iter().step_by(100) {
        writer.remove(*id).unwrap();
    }
    writer.seal_active().unwrap();
    writer.flush().unwrap();
    let reader = FileTier::open("b", &config("b")).unwrap();
    let segments = reader.segment_paths().len();
    let mut group = c.benchmark_group("file_tier refresh");
    group.bench_function(
        format!("nothing new ({REFRESH_BLOCKS} blocks in {segments} segments of another writer)"),
        |b| {
            b.iter(|| {
                let found = reader.refresh().unwrap();
                assert!(found.added.is_empty() && found.removed.is_empty());
            })
        },
    );
    let mut next = REFRESH_BLOCKS as u128 + 1;
    group.bench_function("one new sealed segment of 64 blocks", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let fresh: Vec<BlockId> = (next..next + 64).map(BlockId::from_u128).collect();
                next += 64;
                let items: Vec<(BlockId, &[u8])> =
                    fresh.iter().map(|id| (*id, block.as_slice())).collect();
                for result in writer.put_batch(&items) {
                    result.unwrap();
                }
                writer.seal_active().unwrap();
                let started = Instant::now();
                let found = reader.refresh().unwrap();
                spent += started.elapsed();
                assert_eq!(found.added.len(), 64);
            }
            spent
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench, refresh
}
criterion_main!(benches);
