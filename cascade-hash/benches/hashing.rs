//! Hashing throughput and the checksum's share of a put.
//!
//! `batch/<hash>/<block size>/<threads>t`: one batch of 16 MiB of distinct blocks hashed by
//! `hash_batch` (or `checksum_batch`) on a rayon pool of 1 or 2 threads. GB/s per core =
//! 16 MiB / median time / threads.
//!
//! `put/<block size>/...`: one block (128 KiB or 2 MiB) put into a pre-faulted memory
//! tier (`tier_put`), its checksum alone, both in two passes (`checksum+tier_put`), the
//! put with `copy_with_checksum` filling the tier's buffer through `put_with`
//! (`copy_with_checksum_put`), and the put through `CascadeStore` (`store_put`, dedup off so
//! every put copies). Sources cycle through 32 MiB so they come from memory, not cache.
//!
//! `prefix/4096tok/16`: the prefix keys of a 4096-token prompt in blocks of 16 tokens,
//! what an engine computes per request before asking `lookup_prefix`.
//!
//! Clock: wall time by default. `CASCADE_BENCH_CLOCK=cpu` times with the process's CPU
//! time instead (all threads summed), so the reported throughput is per core and stays
//! meaningful when other processes load the machine; it cannot show wall-clock scaling.
//!
//! Buffers are allocated once and touched before each timing: memory left idle on this
//! VM is handed back to the host and runs slowly when touched again (DESIGN.md).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cascade_core::config::ByteSize;
use std::sync::Arc;

use cascade_core::store::StorePolicy;
use cascade_core::{BlockId, CascadeStore, Hasher, MemoryTier, MemoryTierConfig, Tier};
use cascade_hash::{
    Blake3Hasher, PrefixNamespace, Sha256Hasher, Token, checksum, checksum_batch,
    copy_with_checksum, hash_batch, prefix_keys,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH_BYTES: usize = 16 << 20;
const PUT_SOURCE_BYTES: usize = 32 << 20;

#[derive(Clone, Copy)]
enum Clock {
    Wall,
    Cpu,
}

impl Clock {
    fn from_env() -> Self {
        match std::env::var("CASCADE_BENCH_CLOCK").as_deref() {
            Ok("cpu") => Clock::Cpu,
            _ => Clock::Wall,
        }
    }

    /// Runs `work` and returns how long it took on this clock.
    fn time(self, work: impl FnOnce()) -> Duration {
        match self {
            Clock::Wall => {
                let start = Instant::now();
                work();
                start.elapsed()
            }
            Clock::Cpu => {
                let start = process_cpu_time();
                work();
                process_cpu_time().saturating_sub(start)
            }
        }
    }
}

fn process_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn distinct_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Reads every page so that none is cold when the clock starts.
fn touch(buffer: &[u8]) -> u64 {
    buffer.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool")
}

fn batch(c: &mut Criterion) {
    eprintln!(
        "sha2 SHA-NI backend available: {}",
        cascade_hash::sha_ni_detected()
    );
    let clock = Clock::from_env();
    let data = distinct_bytes(BATCH_BYTES, 7);
    let pools = [(1, pool(1)), (2, pool(2))];
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Bytes(BATCH_BYTES as u64));
    for block in [128 << 10, 2 << 20] {
        let blocks: Vec<&[u8]> = data.chunks_exact(block).collect();
        let size = if block < (1 << 20) { "128KiB" } else { "2MiB" };
        for (threads, pool) in &pools {
            let hashers: [(&str, &dyn Hasher); 2] =
                [("sha256", &Sha256Hasher), ("blake3", &Blake3Hasher)];
            for (name, hasher) in hashers {
                group.bench_function(format!("{name}/{size}/{threads}t"), |b| {
                    b.iter_custom(|iters| {
                        black_box(touch(&data));
                        clock.time(|| {
                            for _ in 0..iters {
                                black_box(pool.install(|| hash_batch(hasher, &blocks)));
                            }
                        })
                    })
                });
            }
            group.bench_function(format!("xxh3/{size}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    black_box(touch(&data));
                    clock.time(|| {
                        for _ in 0..iters {
                            black_box(pool.install(|| checksum_batch(&blocks)));
                        }
                    })
                })
            });
        }
    }
    group.finish();
}

fn put_share(c: &mut Criterion) {
    let config = MemoryTierConfig {
        capacity: ByteSize::mib(128),
        prefault: true,
    };
    let clock = Clock::from_env();
    let source = distinct_bytes(PUT_SOURCE_BYTES, 11);
    let mut group = c.benchmark_group("put");
    for (size, block_len) in [("128KiB", 128 << 10), ("2MiB", 2 << 20)] {
        let blocks: Vec<&[u8]> = source.chunks_exact(block_len).collect();
        let slots = blocks.len() as u64;
        let id = |i: u64| BlockId::from_u128(u128::from(i % slots));
        let tier = MemoryTier::open("bench", &config).expect("memory tier");
        // The same put through the store (index, recency, placement), dedup off so that
        // every put copies: the put a user of Cascade pays for.
        let policy = StorePolicy {
            dedup: false,
            ..StorePolicy::default()
        };
        let store_tier = MemoryTier::open("store", &config).expect("memory tier");
        let store =
            CascadeStore::new(vec![Arc::new(store_tier) as Arc<dyn Tier>], policy).expect("store");
        // Fill once so every later put replaces a block and reuses touched tier memory.
        for (i, block) in (0..).zip(&blocks) {
            tier.put(id(i), block).expect("fill");
            store.put(id(i), block).expect("fill");
        }
        group.throughput(Throughput::Bytes(block_len as u64));
        let mut run = |name: &str, put: &dyn Fn(u64, &[u8])| {
            group.bench_function(format!("{size}/{name}"), |b| {
                b.iter_custom(|iters| {
                    black_box(touch(&source));
                    clock.time(|| {
                        for i in 0..iters {
                            put(i, blocks[(i % slots) as usize]);
                        }
                    })
                })
            });
        };
        run("tier_put", &|i, block| tier.put(id(i), block).expect("put"));
        run("checksum", &|_, block| {
            black_box(checksum(block));
        });
        run("checksum+tier_put", &|i, block| {
            black_box(checksum(block));
            tier.put(id(i), block).expect("put");
        });
        run("copy_with_checksum_put", &|i, block| {
            tier.put_with(id(i), block.len(), &mut |buf| {
                black_box(copy_with_checksum(block, buf)?);
                Ok(())
            })
            .expect("put_with");
        });
        run("store_put", &|i, block| {
            store.put(id(i), block).expect("store put");
        });
    }
    group.finish();
}

fn prefix(c: &mut Criterion) {
    let namespace = PrefixNamespace::new("meta-llama/Llama-3.1-8B")
        .dtype("bf16")
        .layout("nhd-16")
        .to_bytes();
    let tokens: Vec<Token> = (0..4096u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % 128_256)
        .collect();
    let mut group = c.benchmark_group("prefix");
    group.throughput(Throughput::Elements(tokens.len() as u64));
    group.bench_function("4096tok/16", |b| {
        b.iter(|| black_box(prefix_keys(&namespace, black_box(&tokens), 16)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = batch, put_share, prefix
}
criterion_main!(benches);
