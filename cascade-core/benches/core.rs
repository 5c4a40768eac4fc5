//! Micro-benchmarks of the core: the sharded index against one `RwLock<HashMap>`, and
//! store put/get of 128 KiB blocks on the memory tier against plain memcpy, each pair
//! measured in the same run (and, after the groups, in alternating rounds: `paired`).
//!
//! `cargo bench -p cascade-core --bench core`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_core::config::ByteSize;
use cascade_core::store::StorePolicy;
use cascade_core::{
    BlockId, CascadeStore, Index, Location, MemoryTier, MemoryTierConfig, ShardedIndex, Tier,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::RwLock;

const KEYS: u64 = 1 << 16;

fn key(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
}

/// Runs `iters` operations split over `threads` threads and returns the wall time.
fn parallel(threads: u64, iters: u64, op: impl Fn(u64) + Sync) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let op = &op;
            scope.spawn(move || {
                for i in 0..per_thread {
                    op(t * per_thread + i);
                }
            });
        }
    });
    start.elapsed()
}

fn index(c: &mut Criterion) {
    let sharded: ShardedIndex = ShardedIndex::new();
    let single: RwLock<HashMap<BlockId, Location>> = RwLock::new(HashMap::new());
    for n in 0..KEYS {
        let loc = Location { tier: 0, len: n };
        Index::insert(&sharded, key(n), loc);
        single.write().insert(key(n), loc);
    }
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        group.bench_function(BenchmarkId::new("lookup/sharded", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |i| {
                    black_box(Index::get(&sharded, &key(i % KEYS)));
                })
            })
        });
        group.bench_function(BenchmarkId::new("lookup/rwlock-hashmap", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |i| {
                    black_box(single.read().get(&key(i % KEYS)).copied());
                })
            })
        });
        group.bench_function(BenchmarkId::new("insert/sharded", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |i| {
                    Index::insert(&sharded, key(i % KEYS), Location { tier: 1, len: i });
                })
            })
        });
        group.bench_function(BenchmarkId::new("insert/rwlock-hashmap", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |i| {
                    single
                        .write()
                        .insert(key(i % KEYS), Location { tier: 1, len: i });
                })
            })
        });
    }
    group.finish();
}

const BLOCK: usize = 128 * 1024;
const BLOCKS: usize = 512;
const PAGE: usize = 4096;

/// `count` page-aligned buffers of `BLOCK` bytes filled with `fill(n)`, cut from one
/// allocation. The tier's extents are page-aligned too; `rep movsb` runs slower between
/// buffers misaligned to each other, so the memcpy baseline must see the same alignment.
fn aligned_blocks(count: usize, fill: impl Fn(usize) -> u8) -> (Vec<u8>, usize) {
    let mut backing = vec![0u8; count * BLOCK + PAGE];
    let start = backing.as_ptr().align_offset(PAGE);
    for n in 0..count {
        backing[start + n * BLOCK..start + (n + 1) * BLOCK].fill(fill(n));
    }
    (backing, start)
}

fn store(c: &mut Criterion) {
    let config = MemoryTierConfig {
        capacity: ByteSize((BLOCK * BLOCKS * 2) as u64),
        prefault: true,
    };
    let tier: Arc<dyn Tier> = Arc::new(MemoryTier::open("memory0", &config).expect("tier"));
    let store = CascadeStore::new(
        vec![tier],
        StorePolicy {
            dedup: false,
            ..StorePolicy::default()
        },
    )
    .expect("store");
    let (source_backing, s0) = aligned_blocks(BLOCKS, |n| n as u8);
    let (mut target_backing, t0) = aligned_blocks(BLOCKS, |_| 1);
    let (mut out_backing, o0) = aligned_blocks(1, |_| 0);
    let sources: Vec<&[u8]> = source_backing[s0..s0 + BLOCKS * BLOCK]
        .chunks(BLOCK)
        .collect();
    let mut targets: Vec<&mut [u8]> = target_backing[t0..t0 + BLOCKS * BLOCK]
        .chunks_mut(BLOCK)
        .collect();
    let out: &mut [u8] = &mut out_backing[o0..o0 + BLOCK];
    for (n, data) in sources.iter().enumerate() {
        store.put(key(n as u64), data).expect("warm-up put");
        assert_eq!(store.tiers()[0].used() % PAGE as u64, 0);
    }

    let mut group = c.benchmark_group("store-128KiB");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    // Each store operation is paired with a memcpy of the same access pattern: puts copy
    // from many sources into many slots, gets from many slots into one output buffer.
    group.bench_function("memcpy (put pattern)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                targets[i % BLOCKS].copy_from_slice(sources[(i * 7) % BLOCKS]);
            }
            black_box(&targets);
            start.elapsed()
        })
    });
    group.bench_function("put (replace, memory tier)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                store
                    .put(key((i % BLOCKS) as u64), sources[(i * 7) % BLOCKS])
                    .expect("put");
            }
            start.elapsed()
        })
    });
    group.bench_function("memcpy (get pattern)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                out.copy_from_slice(targets[i % BLOCKS]);
                black_box(&out);
            }
            start.elapsed()
        })
    });
    group.bench_function("get (memory tier)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                black_box(store.get(key((i % BLOCKS) as u64), out).expect("get"));
            }
            start.elapsed()
        })
    });
    group.finish();
    paired(&store, &sources, &mut targets, out);
}

/// Alternating short rounds of memcpy and the store op with the same access pattern;
/// prints the median per-round ratio, which stays meaningful while other processes load
/// this 2-core machine (the criterion groups above run seconds apart).
fn paired(store: &CascadeStore, sources: &[&[u8]], targets: &mut [&mut [u8]], out: &mut [u8]) {
    const ROUNDS: usize = 41;
    let ops = BLOCKS;
    let mut put_ratio = Vec::with_capacity(ROUNDS);
    let mut get_ratio = Vec::with_capacity(ROUNDS);
    let (mut put_us, mut get_us, mut copy_put_us, mut copy_get_us) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let shift = round * 13;
        let start = Instant::now();
        for i in 0..ops {
            targets[i % BLOCKS].copy_from_slice(sources[(i * 7 + shift) % BLOCKS]);
        }
        black_box(&targets);
        let copy_put = start.elapsed();
        let start = Instant::now();
        for i in 0..ops {
            store
                .put(key((i % BLOCKS) as u64), sources[(i * 7 + shift) % BLOCKS])
                .expect("put");
        }
        let put = start.elapsed();
        let start = Instant::now();
        for i in 0..ops {
            out.copy_from_slice(targets[(i + shift) % BLOCKS]);
            black_box(&out);
        }
        let copy_get = start.elapsed();
        let start = Instant::now();
        for i in 0..ops {
            black_box(
                store
                    .get(key(((i + shift) % BLOCKS) as u64), out)
                    .expect("get"),
            );
        }
        let get = start.elapsed();
        put_ratio.push(put.as_secs_f64() / copy_put.as_secs_f64());
        get_ratio.push(get.as_secs_f64() / copy_get.as_secs_f64());
        let per = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
        put_us.push(per(put));
        get_us.push(per(get));
        copy_put_us.push(per(copy_put));
        copy_get_us.push(per(copy_get));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\npaired ({ROUNDS} alternating rounds of {ops} ops, 128 KiB): put {:.2} us vs memcpy {:.2} us, \
         median ratio {:.3} ({:+.1}%); get {:.2} us vs memcpy {:.2} us, median ratio {:.3} ({:+.1}%)",
        median(&mut put_us),
        median(&mut copy_put_us),
        median(&mut put_ratio),
        100.0 * (median(&mut put_ratio) - 1.0),
        median(&mut get_us),
        median(&mut copy_get_us),
        median(&mut get_ratio),
        100.0 * (median(&mut get_ratio) - 1.0),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = index, store
}
criterion_main!(benches);
