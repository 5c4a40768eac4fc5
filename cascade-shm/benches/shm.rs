//! Micro-benchmarks of the shm tier, each against a baseline measured in the same run:
//! put and get of 128 KiB and 2 MiB blocks at 1 and 2 threads against memcpy of the same
//! bytes between the same buffers; opening a new pool, reopening an empty one, and
//! reopening one holding 30,000 blocks (every checksum verified). After the criterion
//! groups, `paired` prints a table of each operation against memcpy measured in
//! alternating short runs, which stays meaningful while other processes load the
//! machine.
//!
//! `cargo bench -p cascade-shm --bench shm`
//!
//! `put/shm` and `get/shm` are the default tier (each put checksums and commits before
//! it returns; reads are not verified). `put/shm-background` commits on a background
//! thread (the timing ends only once every put is committed); `get/shm-verified`
//! verifies the checksum on each read.
//! (`CASCADE_SHM_BENCH_POOL_GIB` sets the size of the open/reopen pool, default 4;
//! `CASCADE_SHM_BENCH_DIR` where pools go, default /dev/shm.)
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
use memmap2::MmapMut;
use rayon::prelude::*;

/// Bytes each thread cycles through: larger than the last-level cache, so every copy
/// goes to memory.
const WORKING_SET: usize = 64 << 20;
const SIZES: [usize; 2] = [128 << 10, 2 << 20];
const THREADS: [usize; 2] = [1, 2];

fn id(thread: usize, block: usize) -> BlockId {
    BlockId::from_u128(((thread as u128) << 64) | (block as u128 + 1))
}

/// A page-aligned buffer (like the pool's blocks, and like the pinned or page-aligned
/// buffers inference engines hand over), filled so every page is touched. Alignment
/// matters: `rep movsb` here copies noticeably slower between buffers whose addresses
/// differ modulo 64, so the baseline and the tier must see the same alignment.
fn warmed(len: usize, seed: u8) -> MmapMut {
    let mut buf = MmapMut::map_anon(len).unwrap();
    buf.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, chunk)| {
            for (j, byte) in chunk.iter_mut().enumerate() {
                *byte = (i as u8).wrapping_mul(31) ^ (j as u8) ^ seed;
            }
        });
    buf
}

/// Runs `iters` operations on each of `threads` threads, all started together, then
/// `finish` (which waits for background commits); returns the wall time from the start
/// to the end of `finish`. `op(thread, i)` does operation `i`.
fn timed(
    threads: usize,
    iters: u64,
    op: &(dyn Fn(usize, u64) + Sync),
    finish: &dyn Fn(),
) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..iters {
                        op(t, i);
                    }
                })
            })
            .collect();
        // Taken before the release: workers cannot start ahead of the clock even when
        // this thread is descheduled right after the barrier.
        let start = Instant::now();
        barrier.wait();
        for handle in handles {
            handle.join().unwrap();
        }
        finish();
        start.elapsed()
    })
}

fn bench_dir() -> String {
    std::env::var("CASCADE_SHM_BENCH_DIR").unwrap_or_else(|_| "/dev/shm".into())
}

/// The default pool (each put commits before it returns, reads unverified) or the
/// alternative one (puts commit on a background thread, each read verifies the checksum).
fn open_pool(dir: &Path, name: &str, capacity: usize, alternative: bool) -> ShmTier {
    let mut config = ShmTierConfig::new(dir.join(name), ByteSize(capacity as u64));
    config.verify_on_read = alternative;
    config.background_commit = alternative;
    ShmTier::open(name, &config).unwrap()
}

/// What one timed operation does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    PutMemcpy,
    Put,
    PutBackground,
    GetMemcpy,
    Get,
    GetVerified,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::PutMemcpy,
        Op::Put,
        Op::PutBackground,
        Op::GetMemcpy,
        Op::Get,
        Op::GetVerified,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::PutMemcpy => "put/memcpy",
            Op::Put => "put/shm",
            Op::PutBackground => "put/shm-background",
            Op::GetMemcpy => "get/memcpy",
            Op::Get => "get/shm",
            Op::GetVerified => "get/shm-verified",
        }
    }

    fn baseline(self) -> Op {
        match self {
            Op::PutMemcpy | Op::Put | Op::PutBackground => Op::PutMemcpy,
            _ => Op::GetMemcpy,
        }
    }
}

/// Source and output buffers, the two pools, and a memcpy target as large as a pool;
/// all allocated and warmed once.
struct Fixture {
    _dir: tempfile::TempDir,
    sources: Vec<MmapMut>,
    out_bases: Vec<usize>,
    _outs: Vec<MmapMut>,
    baseline_base: usize,
    _baseline: MmapMut,
    tier: ShmTier,
    alternative: ShmTier,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cascade-shm-bench-")
            .tempdir_in(bench_dir())
            .unwrap();
        let max_threads = *THREADS.iter().max().unwrap();
        let sources: Vec<MmapMut> = (0..max_threads)
            .map(|t| warmed(WORKING_SET, t as u8))
            .collect();
        let mut outs: Vec<MmapMut> = (0..max_threads)
            .map(|t| warmed(WORKING_SET, 99 - t as u8))
            .collect();
        // Room for every thread's working set twice over: a replacing put writes its
        // new copy before it frees the old one.
        let capacity = 2 * max_threads * WORKING_SET + (16 << 20);
        let tier = open_pool(dir.path(), "default", capacity, false);
        let alternative = open_pool(dir.path(), "alternative", capacity, true);
        let mut baseline = warmed(capacity, 7);
        Self {
            _dir: dir,
            out_bases: outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect(),
            _outs: outs,
            sources,
            baseline_base: baseline.as_mut_ptr() as usize,
            _baseline: baseline,
            tier,
            alternative,
        }
    }

    /// Stores every block the case touches, so timed puts replace and gets find.
    fn fill(&self, size: usize, threads: usize) {
        self.tier.clear().unwrap();
        self.alternative.clear().unwrap();
        for t in 0..threads {
            for b in 0..WORKING_SET / size {
                self.tier.put(id(t, b), self.src(t, b, size)).unwrap();
                self.alternative
                    .put(id(t, b), self.src(t, b, size))
                    .unwrap();
            }
        }
        self.tier.wait_committed();
    }

    fn src(&self, t: usize, b: usize, size: usize) -> &[u8] {
        &self.sources[t][b * size..(b + 1) * size]
    }

    #[allow(clippy::mut_from_ref)]
    fn out(&self, t: usize, b: usize, size: usize) -> &mut [u8] {
        // SAFETY: only thread t writes its output buffer, one block range at a time; the
        // buffers live as long as the fixture.
        unsafe { std::slice::from_raw_parts_mut((self.out_bases[t] + b * size) as *mut u8, size) }
    }

    /// Wall time of `iters` operations `op` on each of `threads` threads.
    fn time(&self, op: Op, size: usize, threads: usize, iters: u64) -> Duration {
        let blocks = WORKING_SET / size;
        let run = |t: usize, i: u64| {
            let b = i as usize % blocks;
            match op {
                Op::PutMemcpy => {
                    // Alternate halves, as the pool's replacing puts do.
                    let at = ((t * blocks + b) * 2 + (i as usize / blocks) % 2) * size;
                    // SAFETY: each (thread, block, half) owns a disjoint range inside the
                    // baseline region, which lives as long as the fixture.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut((self.baseline_base + at) as *mut u8, size)
                    };
                    dst.copy_from_slice(self.src(t, b, size));
                }
                Op::Put => self.tier.put(id(t, b), self.src(t, b, size)).unwrap(),
                Op::PutBackground => self
                    .alternative
                    .put(id(t, b), self.src(t, b, size))
                    .unwrap(),
                Op::GetMemcpy => self.out(t, b, size).copy_from_slice(self.src(t, b, size)),
                Op::Get => {
                    black_box(self.tier.get(id(t, b), self.out(t, b, size)).unwrap());
                }
                Op::GetVerified => {
                    black_box(
                        self.alternative
                            .get(id(t, b), self.out(t, b, size))
                            .unwrap(),
                    );
                }
            }
        };
        let finish = || {
            if op == Op::Put {
                self.tier.wait_committed();
            }
        };
        timed(threads, iters, &run, &finish)
    }
}

fn throughput(c: &mut Criterion) {
    let fixture = Fixture::new();
    let mut group = c.benchmark_group("shm");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for size in SIZES {
        for threads in THREADS {
            fixture.fill(size, threads);
            group.throughput(Throughput::Bytes((size * threads) as u64));
            let label = format!("{}KiB/{}t", size >> 10, threads);
            for op in Op::ALL {
                group.bench_function(BenchmarkId::new(op.name(), &label), |bench| {
                    bench.iter_custom(|iters| fixture.time(op, size, threads, iters))
                });
            }
        }
    }
    group.finish();
}

/// Each tier operation against its memcpy baseline in alternating short runs (256 MiB
/// per thread each), so load from other processes hits both alike; prints the
/// median throughput of each and the median of the per-pair ratios.
fn paired(_: &mut Criterion) {
    const PAIRS: usize = 15;
    let fixture = Fixture::new();
    println!("\npaired runs ({PAIRS} alternating pairs each; GB/s = 1e9 bytes/s, medians)");
    println!("| block | threads | operation | GB/s | memcpy GB/s | ratio |");
    println!("|---|---|---|---|---|---|");
    for size in SIZES {
        for threads in THREADS {
            fixture.fill(size, threads);
            // Four passes over the working set: 256 MiB per thread per run.
            let iters = 4 * (WORKING_SET / size) as u64;
            let bytes = (size * threads) as f64 * iters as f64;
            for op in Op::ALL.into_iter().filter(|&op| op != op.baseline()) {
                let (mut tier, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
                for pair in 0..PAIRS {
                    let order = if pair % 2 == 0 {
                        [op, op.baseline()]
                    } else {
                        [op.baseline(), op]
                    };
                    let mut rate = [0.0; 2];
                    for which in order {
                        let seconds = fixture.time(which, size, threads, iters).as_secs_f64();
                        rate[usize::from(which == op.baseline())] = bytes / seconds / 1e9;
                    }
                    tier.push(rate[0]);
                    base.push(rate[1]);
                    ratios.push(rate[0] / rate[1]);
                }
                println!(
                    "| {} KiB | {threads} | {} | {:.1} | {:.1} | {:.0}% |",
                    size >> 10,
                    op.name(),
                    median(&mut tier),
                    median(&mut base),
                    100.0 * median(&mut ratios)
                );
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn open_times(c: &mut Criterion) {
    let gib: u64 = std::env::var("CASCADE_SHM_BENCH_POOL_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::Builder::new()
        .prefix("cascade-shm-bench-open-")
        .tempdir_in(bench_dir())
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
        tier.flush().unwrap();
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

criterion_group!(benches, throughput, paired, open_times);
criterion_main!(benches);
