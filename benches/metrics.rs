//! What the store's latency histograms cost on the hot path: `put` and `get` of 128 KiB
//! blocks through a store over one shm tier, with metrics on (the default) and off
//! (`CascadeStore::without_latency_metrics`), in one run.
//!
//! `cargo bench --bench metrics`
//!
//! After the criterion groups, `paired` prints each operation's time with metrics on
//! over off, measured in alternating short runs (the median of the per-round ratios),
//! which stays meaningful while other processes load this 2-core machine.
//! (`CASCADE_METRICS_BENCH_DIR` says where the pools go, default /dev/shm.)
//!
//! Buffers and pools are allocated and warmed once, outside the timed parts: memory
//! left idle on this VM is handed back to the host and runs slowly when touched again.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade::core::metrics::{Call, Latency, Timer};
use cascade::{BlockId, ByteSize, CascadeStore, StorePolicy};
use cascade_shm::{ShmTier, ShmTierConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 128 << 10;
/// Blocks cycled through: 64 MiB, larger than the last-level cache.
const BLOCKS: usize = 512;

struct Setup {
    _dir: tempfile::TempDir,
    stores: [(&'static str, CascadeStore); 2],
    source: Vec<u8>,
}

fn pool_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("CASCADE_METRICS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    if parent.is_dir() {
        tempfile::tempdir_in(parent).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn store(dir: &std::path::Path, name: &str) -> CascadeStore {
    let config = ShmTierConfig::new(dir.join(format!("{name}.pool")), ByteSize::mib(256));
    let tier = ShmTier::open(name, &config).unwrap();
    // Dedup off: every put of a cycled id replaces the block, so each one copies.
    let policy = StorePolicy {
        dedup: false,
        promote_on_read: false,
        num_io_threads: 0,
        ..StorePolicy::default()
    };
    CascadeStore::new(vec![Arc::new(tier)], policy).unwrap()
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(n as u128 + 1)
}

fn setup() -> Setup {
    let dir = pool_dir();
    let off = store(dir.path(), "off").without_latency_metrics();
    let on = store(dir.path(), "on");
    assert!(on.latency().is_some() && off.latency().is_none());
    let source: Vec<u8> = (0..BLOCK * BLOCKS)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 12) as u8)
        .collect();
    for s in [&off, &on] {
        for n in 0..BLOCKS {
            s.put(id(n), &source[n * BLOCK..(n + 1) * BLOCK]).unwrap();
        }
    }
    Setup {
        _dir: dir,
        stores: [("metrics_off", off), ("metrics_on", on)],
        source,
    }
}

fn put(store: &CascadeStore, source: &[u8], i: u64) {
    let n = i as usize % BLOCKS;
    store
        .put(id(n), black_box(&source[n * BLOCK..(n + 1) * BLOCK]))
        .unwrap();
}

fn get(store: &CascadeStore, out: &mut [u8], i: u64) {
    let n = i as usize % BLOCKS;
    assert_eq!(store.get(id(n), out).unwrap(), Some(BLOCK));
    black_box(&out[..]);
}

fn time(iters: u64, mut op: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        op(i);
    }
    start.elapsed()
}

fn groups(c: &mut Criterion) {
    let setup = setup();
    let mut out = vec![0u8; BLOCK];
    for (op, is_put) in [("put", true), ("get", false)] {
        let mut group = c.benchmark_group(format!("store_{op}_128KiB"));
        group.throughput(Throughput::Bytes(BLOCK as u64));
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));
        for (mode, store) in &setup.stores {
            group.bench_function(BenchmarkId::from_parameter(mode), |b| {
                b.iter_custom(|iters| {
                    if is_put {
                        time(iters, |i| put(store, &setup.source, i))
                    } else {
                        time(iters, |i| get(store, &mut out, i))
                    }
                });
            });
        }
        group.finish();
    }
    paired(&setup, &mut out);
}

/// Alternating short runs of metrics off and on; prints the median of the ratios, and
/// what the recording alone (two clock reads and a histogram update) costs per call,
/// against the time of one put and one get with metrics off.
fn paired(setup: &Setup, out: &mut [u8]) {
    const ROUNDS: usize = 61;
    const OPS: u64 = 2048;
    let [(_, off), (_, on)] = &setup.stores;
    let mut per_call = Vec::new();
    println!("\npaired: time with metrics on / off, {ROUNDS} alternating rounds of {OPS} ops");
    for (op, is_put) in [("put", true), ("get", false)] {
        let mut run = |store: &CascadeStore| {
            if is_put {
                time(OPS, |i| put(store, &setup.source, i))
            } else {
                time(OPS, |i| get(store, out, i))
            }
        };
        let mut ratios = Vec::with_capacity(ROUNDS);
        let (mut off_total, mut on_total) = (Duration::ZERO, Duration::ZERO);
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always runs on a warmer cache.
            let (t_off, t_on) = if round % 2 == 0 {
                let a = run(off);
                (a, run(on))
            } else {
                let b = run(on);
                (run(off), b)
            };
            off_total += t_off;
            on_total += t_on;
            ratios.push(t_on.as_secs_f64() / t_off.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let per_op_ns = off_total.as_secs_f64() * 1e9 / (ROUNDS as f64 * OPS as f64);
        per_call.push((op, per_op_ns));
        let gbps =
            |d: Duration| (ROUNDS as f64 * OPS as f64 * BLOCK as f64) / d.as_secs_f64() / 1e9;
        println!(
            "  {op} 128 KiB: on/off median {:.4} (quartiles {:.4} .. {:.4}); off {:.2} GB/s, on {:.2} GB/s",
            ratios[ROUNDS / 2],
            ratios[ROUNDS / 4],
            ratios[3 * ROUNDS / 4],
            gbps(off_total),
            gbps(on_total),
        );
    }
    let latency = Latency::new();
    const CALLS: u32 = 1_000_000;
    let started = Instant::now();
    for _ in 0..CALLS {
        Timer::start(black_box(Some(&latency))).put(Call::Single);
    }
    let record_ns = started.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS);
    for (op, op_ns) in per_call {
        println!(
            "  recording alone: {record_ns:.0} ns per call = {:.2}% of a {op} ({op_ns:.0} ns with metrics off)",
            100.0 * record_ns / op_ns
        );
    }
}

criterion_group!(benches, groups);
criterion_main!(benches);
