//! Micro-benchmarks of the shm tier, each against a baseline measured in the same run:
//! put and get of 128 KiB and 2 MiB blocks at 1 and 2 threads against memcpy of the same
//! bytes between the same buffers; opening a new pool, reopening an empty one, and
//! reopening one holding 30,000 blocks (every checksum verified).
//!
//! `cargo bench -p cascade-shm --bench shm`
//! (`CASCADE_SHM_BENCH_POOL_GIB` sets the size of the open/reopen pool; default 4.)
//!
//! Buffers and pools are allocated and warmed once, outside the timed parts: memory
//! left idle on this VM is handed back to the host and runs slowly when touched again.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, Tier};
use cascade_shm::{ShmTier, ShmTierConfig};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rayon::prelude::*;

/// Bytes each thread cycles through: larger than the last-level cache, so every copy
/// goes to memory.
const WORKING_SET: usize = 64 << 20;
const SIZES: [usize; 2] = [128 << 10, 2 << 20];
const THREADS: [usize; 2] = [1, 2];

fn id(thread: usize, block: usize) -> BlockId {
    BlockId::from_u128(((thread as u128) << 64) | (block as u128 + 1))
}

fn warmed(len: usize, seed: u8) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    buf.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, chunk)| {
            for (j, byte) in chunk.iter_mut().enumerate() {
                *byte = (i as u8).wrapping_mul(31) ^ (j as u8) ^ seed;
            }
        });
    buf
}

/// Runs `iters` operations on each of `threads` threads, all started together, and
/// returns the wall time of the slowest; `op(thread, i)` does operation `i`.
fn timed(threads: usize, iters: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn open_pool(dir: &Path, name: &str, capacity: usize, verify_on_read: bool) -> ShmTier {
    let mut config = ShmTierConfig::new(dir.join(name), ByteSize(capacity as u64));
    config.verify_on_read = verify_on_read;
    ShmTier::open(name, &config).unwrap()
}

fn throughput(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("cascade-shm-bench-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let max_threads = *THREADS.iter().max().unwrap();
    let sources: Vec<Vec<u8>> = (0..max_threads)
        .map(|t| warmed(WORKING_SET, t as u8))
        .collect();
    let mut outs: Vec<Vec<u8>> = (0..max_threads)
        .map(|t| warmed(WORKING_SET, 99 - t as u8))
        .collect();
    // Room for every thread's working set twice over: a replacing put writes its new
    // copy before it frees the old one.
    let capacity = 2 * max_threads * WORKING_SET + (16 << 20);
    let tier = open_pool(dir.path(), "plain", capacity, false);
    let verified = open_pool(dir.path(), "verified", capacity, true);
    // The memcpy baseline copies into a region as large as the pool, touched the same way.
    let mut baseline_pool = warmed(capacity, 7);

    let mut group = c.benchmark_group("shm");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for size in SIZES {
        let blocks = WORKING_SET / size;
        for threads in THREADS {
            group.throughput(Throughput::Bytes((size * threads) as u64));
            let label = format!("{}KiB/{}t", size >> 10, threads);
            for t in 0..threads {
                for b in 0..blocks {
                    let data = &sources[t][b * size..(b + 1) * size];
                    tier.put(id(t, b), data).unwrap();
                    verified.put(id(t, b), data).unwrap();
                }
            }
            let srcs = &sources;
            group.bench_function(BenchmarkId::new("put/memcpy", &label), |bench| {
                let base = baseline_pool.as_mut_ptr() as usize;
                bench.iter_custom(|iters| {
                    timed(threads, iters, &|t, i| {
                        let b = i as usize % blocks;
                        let src = &srcs[t][b * size..(b + 1) * size];
                        // Alternate halves like the pool's replacing puts do.
                        let slot = (t * blocks + b) * 2 + (i as usize / blocks) % 2;
                        // SAFETY: each (thread, block, half) owns a disjoint range of the
                        // baseline region, inside its bounds.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut((base + slot * size) as *mut u8, size)
                        };
                        dst.copy_from_slice(src);
                    })
                })
            });
            group.bench_function(BenchmarkId::new("put/shm", &label), |bench| {
                bench.iter_custom(|iters| {
                    timed(threads, iters, &|t, i| {
                        let b = i as usize % blocks;
                        tier.put(id(t, b), &srcs[t][b * size..(b + 1) * size])
                            .unwrap();
                    })
                })
            });
            let out_bases: Vec<usize> = outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
            let out_bases = &out_bases;
            let out_of = |t: usize, b: usize| {
                // SAFETY: thread t alone writes its own output buffer, block b's range.
                unsafe {
                    std::slice::from_raw_parts_mut((out_bases[t] + b * size) as *mut u8, size)
                }
            };
            group.bench_function(BenchmarkId::new("get/memcpy", &label), |bench| {
                bench.iter_custom(|iters| {
                    timed(threads, iters, &|t, i| {
                        let b = i as usize % blocks;
                        out_of(t, b).copy_from_slice(&srcs[t][b * size..(b + 1) * size]);
                    })
                })
            });
            group.bench_function(BenchmarkId::new("get/shm", &label), |bench| {
                bench.iter_custom(|iters| {
                    timed(threads, iters, &|t, i| {
                        let b = i as usize % blocks;
                        black_box(tier.get(id(t, b), out_of(t, b)).unwrap());
                    })
                })
            });
            group.bench_function(BenchmarkId::new("get/shm-verified", &label), |bench| {
                bench.iter_custom(|iters| {
                    timed(threads, iters, &|t, i| {
                        let b = i as usize % blocks;
                        black_box(verified.get(id(t, b), out_of(t, b)).unwrap());
                    })
                })
            });
            tier.clear().unwrap();
            verified.clear().unwrap();
        }
    }
    group.finish();
}

fn open_times(c: &mut Criterion) {
    let gib: u64 = std::env::var("CASCADE_SHM_BENCH_POOL_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::Builder::new()
        .prefix("cascade-shm-bench-open-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let path = dir.path().join("pool");
    let config = ShmTierConfig::new(&path, ByteSize::gib(gib));
    let mut group = c.benchmark_group("shm-open");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(1));

    group.bench_function(BenchmarkId::new("create", format!("{gib}GiB")), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_file(&path);
                let start = Instant::now();
                let tier = ShmTier::open("shm0", &config).unwrap();
                total += start.elapsed();
                drop(tier);
            }
            total
        })
    });
    group.bench_function(
        BenchmarkId::new("reopen-empty", format!("{gib}GiB")),
        |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let tier = ShmTier::open("shm0", &config).unwrap();
                    total += start.elapsed();
                    drop(tier);
                }
                total
            })
        },
    );

    let blocks = 30_000usize;
    let size = ((gib << 30) as usize * 9 / 10 / blocks) & !4095;
    {
        let tier = Arc::new(ShmTier::open("shm0", &config).unwrap());
        tier.clear().unwrap();
        let data = warmed(size, 3);
        (0..blocks).into_par_iter().for_each(|b| {
            tier.put(id(0, b), &data).unwrap();
        });
    }
    group.bench_function(
        BenchmarkId::new(
            format!("reopen-{blocks}-blocks-of-{}KiB", size >> 10),
            format!("{gib}GiB"),
        ),
        |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let tier = ShmTier::open("shm0", &config).unwrap();
                    total += start.elapsed();
                    assert_eq!(tier.recovered_blocks(), blocks);
                    drop(tier);
                }
                total
            })
        },
    );
    group.finish();
}

criterion_group!(benches, throughput, open_times);
criterion_main!(benches);
