//! The store's batched moves between host tiers against memcpy of the same bytes: a
//! demotion of 512 blocks of 128 KiB (64 MiB) from a `memory` tier into an `shm` tier
//! below it (`CascadeStore::free_up`, the path a put that overflows the memory tier takes:
//! the coldest blocks go down in one batch, written in place into the shm pool), and the
//! batched promotion back on a batch read.
//!
//! `cargo bench --bench moves`
//!
//! After the criterion groups, `paired` prints each move's time against memcpy of the
//! same 64 MiB (between two buffers of the same alignment, touched beforehand) measured
//! in alternating rounds, with the median of the per-round ratios: on this 2-core VM the
//! ratio measured in one round pair stays meaningful while the absolute figures wander.
//! Every round's moved blocks are read back and compared outside the timed part.
//! (`CASCADE_MOVES_BENCH_DIR` says where the pool goes, default /dev/shm.)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade::{BlockId, ByteSize, CascadeStore, MemoryTier, MemoryTierConfig, StorePolicy, Tier};
use cascade_shm::{ShmTier, ShmTierConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 128 << 10;
/// Blocks per move: 64 MiB, larger than the last-level cache.
const BLOCKS: usize = 512;
const PAGE: usize = 4096;

struct Setup {
    _dir: tempfile::TempDir,
    store: CascadeStore,
    /// The blocks' bytes, page-aligned (as the tiers' extents are).
    source: Vec<u8>,
    source_at: usize,
    /// memcpy's destination, page-aligned and touched.
    target: Vec<u8>,
    target_at: usize,
    /// Outputs of the batch reads that promote.
    outs: Vec<Vec<u8>>,
}

fn pool_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("CASCADE_MOVES_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    if parent.is_dir() {
        tempfile::tempdir_in(parent).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn aligned(len: usize, fill: impl Fn(usize) -> u8) -> (Vec<u8>, usize) {
    let mut backing = vec![0u8; len + PAGE];
    let at = backing.as_ptr().align_offset(PAGE);
    for (i, b) in backing[at..at + len].iter_mut().enumerate() {
        *b = fill(i);
    }
    (backing, at)
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(0xB10C_0000 + n as u128)
}

fn setup() -> Setup {
    let dir = pool_dir();
    let bytes = (BLOCK * BLOCKS) as u64;
    let memory = MemoryTier::open(
        "memory",
        &MemoryTierConfig {
            capacity: ByteSize(bytes),
            prefault: true,
        },
    )
    .unwrap();
    let shm = ShmTier::open(
        "shm",
        &ShmTierConfig::new(dir.path().join("moves.pool"), ByteSize(2 * bytes)),
    )
    .unwrap();
    let tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(memory), Arc::new(shm)];
    let policy = StorePolicy {
        dedup: false,
        promote_on_read: true,
        num_io_threads: 0,
        ..StorePolicy::default()
    };
    let store = CascadeStore::new(tiers, policy).unwrap();
    let (source, source_at) = aligned(BLOCK * BLOCKS, |i| {
        (i as u8).wrapping_mul(31) ^ (i >> 12) as u8
    });
    let (target, target_at) = aligned(BLOCK * BLOCKS, |i| i as u8);
    let outs = (0..BLOCKS).map(|_| vec![1u8; BLOCK]).collect();
    Setup {
        _dir: dir,
        store,
        source,
        source_at,
        target,
        target_at,
        outs,
    }
}

impl Setup {
    fn block(&self, n: usize) -> &[u8] {
        &self.source[self.source_at + n * BLOCK..self.source_at + (n + 1) * BLOCK]
    }

    /// Fills the memory tier with the blocks (untimed).
    fn fill_top(&self) {
        self.store.clear().unwrap();
        for n in 0..BLOCKS {
            self.store.put(id(n), self.block(n)).unwrap();
        }
        assert_eq!(self.store.stats().tiers[0].blocks, BLOCKS as u64);
    }

    /// One timed demotion of every block of the memory tier into shm.
    fn demote(&self) -> Duration {
        let start = Instant::now();
        let freed = self.store.free_up(0, (BLOCK * BLOCKS) as u64).unwrap();
        let took = start.elapsed();
        assert_eq!(freed, (BLOCK * BLOCKS) as u64, "every block moved down");
        took
    }

    /// One timed batch read of every block (in shm), which promotes them all back.
    fn read_and_promote(&mut self) -> Duration {
        let ids: Vec<BlockId> = (0..BLOCKS).map(id).collect();
        let mut batch: Vec<(BlockId, &mut [u8])> = ids
            .iter()
            .zip(self.outs.iter_mut())
            .map(|(id, out)| (*id, out.as_mut_slice()))
            .collect();
        let start = Instant::now();
        let results = self.store.get_batch(&mut batch);
        let took = start.elapsed();
        for r in results {
            assert_eq!(r.unwrap(), Some(BLOCK));
        }
        took
    }

    /// memcpy of the same blocks between two touched buffers.
    fn memcpy(&mut self) -> Duration {
        let (src, dst) = (
            &self.source[self.source_at..],
            &mut self.target[self.target_at..],
        );
        let start = Instant::now();
        for n in 0..BLOCKS {
            dst[n * BLOCK..(n + 1) * BLOCK].copy_from_slice(&src[n * BLOCK..(n + 1) * BLOCK]);
        }
        black_box(&dst[..]);
        start.elapsed()
    }

    /// memcpy of the same blocks on two threads, half each (this machine's cores).
    fn memcpy2(&mut self) -> Duration {
        let (src, dst) = (
            &self.source[self.source_at..self.source_at + BLOCK * BLOCKS],
            &mut self.target[self.target_at..self.target_at + BLOCK * BLOCKS],
        );
        let half = BLOCK * BLOCKS / 2;
        let (d0, d1) = dst.split_at_mut(half);
        let (s0, s1) = src.split_at(half);
        let start = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for (d, s) in d1.chunks_mut(BLOCK).zip(s1.chunks(BLOCK)) {
                    d.copy_from_slice(s);
                }
            });
            for (d, s) in d0.chunks_mut(BLOCK).zip(s0.chunks(BLOCK)) {
                d.copy_from_slice(s);
            }
        });
        black_box(&self.target[..]);
        start.elapsed()
    }

    /// Every block is where the last move put it, with its bytes (untimed).
    fn check(&mut self, tier: usize) {
        let mut out = vec![0u8; BLOCK];
        for n in 0..BLOCKS {
            assert_eq!(self.store.tier_of(id(n)), Some(tier), "block {n}");
            out.fill(0);
            assert_eq!(
                self.store.tiers()[tier].get(id(n), &mut out).unwrap(),
                BLOCK
            );
            assert!(out == self.block(n), "block {n} changed while moving");
        }
        if tier == 0 {
            for (n, out) in self.outs.iter().enumerate() {
                assert!(out.as_slice() == self.block(n), "block {n} read wrong");
            }
        }
    }
}

fn groups(c: &mut Criterion) {
    let mut setup = setup();
    let mut group = c.benchmark_group("moves_64MiB");
    group.throughput(Throughput::Bytes((BLOCK * BLOCKS) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("memcpy", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| setup.memcpy()).sum())
    });
    group.bench_function("demotion memory->shm (free_up)", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    setup.fill_top();
                    setup.demote()
                })
                .sum()
        })
    });
    group.bench_function("batch read shm + promotion ->memory", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    setup.fill_top();
                    setup.demote();
                    setup.read_and_promote()
                })
                .sum()
        })
    });
    group.finish();
    paired(&mut setup);
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Alternating rounds: memcpy, demotion, memcpy, read + promotion; each move's time is
/// set against the memcpy right before it.
fn paired(setup: &mut Setup) {
    const ROUNDS: usize = 15;
    let gb = |d: Duration| (BLOCK * BLOCKS) as f64 / d.as_secs_f64() / 1e9;
    let (mut copy, mut down, mut up, mut down_ratio, mut up_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut copy2, mut down_ratio2) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        setup.fill_top();
        let base2 = setup.memcpy2();
        let base = setup.memcpy();
        let demoted = setup.demote();
        copy2.push(gb(base2));
        down_ratio2.push(base2.as_secs_f64() / demoted.as_secs_f64());
        setup.check(1);
        let base_up = setup.memcpy();
        let promoted = setup.read_and_promote();
        setup.check(0);
        copy.extend([gb(base), gb(base_up)]);
        down.push(gb(demoted));
        up.push(gb(promoted));
        down_ratio.push(base.as_secs_f64() / demoted.as_secs_f64());
        up_ratio.push(base_up.as_secs_f64() / promoted.as_secs_f64());
    }
    println!(
        "\npaired ({ROUNDS} rounds, 512 x 128 KiB, every moved block compared): \
         memcpy {:.2} GB/s (1 thread), {:.2} GB/s (2 threads); demotion memory->shm {:.2} GB/s, \
         {:.0}% of 1-thread memcpy, {:.0}% of 2-thread memcpy; \
         batch read + promotion shm->memory {:.2} GB/s (two copies per block), {:.0}% of 1-thread memcpy",
        median(&mut copy),
        median(&mut copy2),
        median(&mut down),
        100.0 * median(&mut down_ratio),
        100.0 * median(&mut down_ratio2),
        median(&mut up),
        100.0 * median(&mut up_ratio),
    );
}

criterion_group!(benches, groups);
criterion_main!(benches);
