//! Measures the GPU tier against the PCIe ceiling of the same run.
//!
//! ```text
//! cargo build --release -p cascade-gpu --example gpu_bench
//! LD_LIBRARY_PATH=/usr/local/nvidia/lib64 target/release/examples/gpu_bench [--blocks 8192] [--block-kib 128] [--reps 5]
//! ```
//!
//! In one process: a 1 GiB pinned copy each way (the ceiling, `measure_pinned_copy`),
//! then `--blocks` blocks put and read back through the tier from pinned memory,
//! pageable memory, the registered host pool of the tier below (an shm pool on
//! /dev/shm, else a memory tier), and device memory. Every read lands in a poisoned
//! buffer and is compared with what was put. Prints medians in GB/s (1e9 bytes/s).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, MemoryTier, MemoryTierConfig, Tier};
use cascade_gpu::{GpuTier, GpuTierConfig, measure_pinned_copy};
use cudarc::driver::{CudaContext, result, sys};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

struct Args {
    blocks: usize,
    block: usize,
    reps: usize,
    variants: usize,
}

fn args() -> Args {
    let mut a = Args {
        blocks: 8192,
        block: 128 << 10,
        reps: 5,
        variants: 0,
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv[1..].chunks(2) {
        let value: usize = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("--flag NUMBER");
        match pair[0].as_str() {
            "--blocks" => a.blocks = value,
            "--block-kib" => a.block = value << 10,
            "--reps" => a.reps = value,
            "--variants" => a.variants = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn fill_random(buf: &mut [u8], seed: u64) {
    buf.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, chunk)| {
            StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9)).fill_bytes(chunk);
        });
}

fn poison(buf: &mut [u8], byte: u8) {
    buf.par_chunks_mut(1 << 20).for_each(|c| c.fill(byte));
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.par_chunks(1 << 20)
        .zip(b.par_chunks(1 << 20))
        .all(|(x, y)| x == y)
}

/// Pinned host memory for the benchmark's own buffers (cached, not write-combined).
struct Pinned {
    ptr: *mut u8,
    len: usize,
}

impl Pinned {
    fn new(len: usize) -> Self {
        // SAFETY: a context is current (opened in main); freed in Drop.
        let ptr = unsafe { result::malloc_host(len, 0) }.unwrap().cast::<u8>();
        let mut p = Self { ptr, len };
        poison(p.as_mut(), 0);
        p
    }
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` bytes allocated in `new`, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host, freed once.
        unsafe { result::free_host(self.ptr.cast()) }.unwrap();
    }
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(n as u128 * 0x9E37_79B9_7F4A_7C15 + 3)
}

/// Puts every block from `src` and reads them back into `dst` (poisoned first); checks
/// the bytes; returns (put GB/s, get GB/s) medians.
fn host_round(tier: &GpuTier, a: &Args, src: &[u8], dst: &mut [u8]) -> (f64, f64) {
    let total = a.blocks * a.block;
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        tier.clear().unwrap();
        let items: Vec<(BlockId, &[u8])> = src
            .chunks(a.block)
            .enumerate()
            .map(|(n, c)| (id(n), c))
            .collect();
        let t = Instant::now();
        let results = tier.put_batch(&items);
        puts.push(t.elapsed().as_secs_f64());
        assert!(
            results.iter().all(|r| r.is_ok()),
            "put_batch failed: {:?}",
            results.iter().find(|r| r.is_err())
        );
        poison(dst, 0xA5 ^ rep as u8);
        let mut reads: Vec<(BlockId, &mut [u8])> = dst
            .chunks_mut(a.block)
            .enumerate()
            .map(|(n, c)| (id(n), c))
            .collect();
        let t = Instant::now();
        let results = tier.get_batch(&mut reads);
        gets.push(t.elapsed().as_secs_f64());
        assert!(
            results.iter().all(|r| matches!(r, Ok(n) if *n == a.block)),
            "get_batch failed"
        );
        assert!(
            same(src, dst),
            "bytes read differ from bytes put (rep {rep})"
        );
    }
    (gbps(total, median(puts)), gbps(total, median(gets)))
}

/// What limits the staged path: plain parallel memcpy between pageable and pinned
/// memory on this host, then the tier's pageable path under other staging settings.
fn pageable_study(a: &Args, pageable: &[u8], pageable_out: &mut [u8], pinned: &mut [u8]) {
    let total = a.blocks * a.block;
    println!();
    println!(
        "| CPU copy, 1 MiB pieces | threads | pageable -> pinned GB/s | pinned -> pageable GB/s |"
    );
    println!("|---|---|---|---|");
    for threads in [1usize, 8, 12, 16] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (mut to_pinned, mut from_pinned) = (Vec::new(), Vec::new());
        for _ in 0..a.reps {
            let t = Instant::now();
            pool.install(|| {
                pinned
                    .par_chunks_mut(1 << 20)
                    .zip(pageable.par_chunks(1 << 20))
                    .for_each(|(d, s)| d.copy_from_slice(s))
            });
            to_pinned.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            pool.install(|| {
                pageable_out
                    .par_chunks_mut(1 << 20)
                    .zip(pinned.par_chunks(1 << 20))
                    .for_each(|(d, s)| d.copy_from_slice(s))
            });
            from_pinned.push(t.elapsed().as_secs_f64());
        }
        println!(
            "| memcpy | {threads} | {:.1} | {:.1} |",
            gbps(total, median(to_pinned)),
            gbps(total, median(from_pinned))
        );
    }
    println!();
    println!("| pageable path, staging | copy threads | put GB/s | get GB/s |");
    println!("|---|---|---|---|");
    for (threads, mib, count) in [
        (8, 4, 16),
        (16, 4, 16),
        (16, 2, 32),
        (16, 8, 16),
        (12, 4, 16),
    ] {
        let config = GpuTierConfig {
            capacity: ByteSize::b((total + (64 << 20)) as u64),
            copy_threads: threads,
            staging_buffer_size: ByteSize::mib(mib),
            staging_buffers: count,
            ..GpuTierConfig::default()
        };
        let tier = GpuTier::open("gpu-variant", &config).unwrap();
        let (put, get) = host_round(&tier, a, pageable, pageable_out);
        println!("| {count} x {mib} MiB | {threads} | {put:.1} | {get:.1} |");
    }
}

fn main() {
    let a = args();
    let total = a.blocks * a.block;
    let ctx = CudaContext::new(0).expect("a CUDA device");
    let card = ctx.name().unwrap();
    let config = GpuTierConfig {
        capacity: ByteSize::b((total + (64 << 20)) as u64),
        ..GpuTierConfig::default()
    };
    let tier = GpuTier::open("gpu0", &config).expect("GPU tier");
    ctx.bind_to_thread().unwrap();
    println!(
        "card: {card}; blocks: {} x {} KiB = {} MiB; reps: {} (medians); streams {}, batch_group {}, staging {} x {}, copy threads {}, cuMemcpyBatchAsync: {}",
        a.blocks,
        a.block >> 10,
        total >> 20,
        a.reps,
        config.streams,
        config.batch_group,
        config.staging_buffers,
        config.staging_buffer_size,
        config.resolved_copy_threads(),
        tier.uses_batch_copy()
    );

    // Ceiling: one pinned copy of the whole size each way, medians of `reps`, the round
    // trip checked byte for byte (the crate's own measurement, as cascade-bench uses).
    let rate = measure_pinned_copy(0, total, a.reps).expect("pinned-copy ceiling");
    let ceiling = (rate.host_to_device_gbps, rate.device_to_host_gbps);
    ctx.bind_to_thread().unwrap();
    let mut pinned_src = Pinned::new(total);
    let mut pinned_dst = Pinned::new(total);
    fill_random(pinned_src.as_mut(), 1);
    // SAFETY: context current; freed at the end of main.
    let dev = unsafe { result::malloc_sync(total) }.unwrap();
    let stream = ctx.new_stream().unwrap();

    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    rows.push((
        "pinned host memory",
        host_round(&tier, &a, pinned_src.as_ref(), pinned_dst.as_mut()),
    ));

    let mut pageable_src = vec![0u8; total];
    fill_random(&mut pageable_src, 2);
    let mut pageable_dst = vec![0u8; total];
    rows.push((
        "pageable host memory (staged)",
        host_round(&tier, &a, &pageable_src, &mut pageable_dst),
    ));
    if a.variants > 0 {
        pageable_study(&a, &pageable_src, &mut pageable_dst, pinned_dst.as_mut());
    }
    drop(pageable_src);
    drop(pageable_dst);

    // The host pool of a tier below, registered with CUDA through attach_below: the shm
    // pool on /dev/shm where there is one (as deployed), else a memory tier.
    let pool_dir = std::path::Path::new("/dev/shm");
    let pool_path = pool_dir.join(format!("cascade-gpu-bench-{}.pool", std::process::id()));
    let below: Box<dyn Tier> = if pool_dir.is_dir() {
        let config = cascade_shm::ShmTierConfig {
            path: Some(pool_path.clone()),
            capacity: ByteSize::b(2 * total as u64),
            ..cascade_shm::ShmTierConfig::default()
        };
        Box::new(cascade_shm::ShmTier::open("shm0", &config).unwrap())
    } else {
        let config = MemoryTierConfig {
            capacity: ByteSize::b(2 * total as u64),
            prefault: true,
        };
        Box::new(MemoryTier::open("mem0", &config).unwrap())
    };
    println!("pool below: {} tier", below.kind());
    let t = Instant::now();
    tier.attach_below(&*below).unwrap();
    let register_ms = t.elapsed().as_secs_f64() * 1e3;
    let region = below.host_region().unwrap();
    assert!(region.len >= 2 * total, "the pool below holds both buffers");
    // SAFETY: the region (at least 2 * total bytes) lives until `below` drops at the end
    // of main; the bench uses it as two plain buffers and stores no blocks in `below`.
    let (pool_src, pool_dst) =
        unsafe { std::slice::from_raw_parts_mut(region.base, 2 * total) }.split_at_mut(total);
    fill_random(pool_src, 3);
    rows.push((
        "registered host pool (tier below)",
        host_round(&tier, &a, pool_src, pool_dst),
    ));

    // One block per call into the registered pool: what a store demotion does.
    let mut singles = Vec::new();
    for _ in 0..a.reps {
        poison(pool_dst, 0x11);
        let t = Instant::now();
        for (n, out) in pool_dst.chunks_mut(a.block).enumerate() {
            tier.get(id(n), out).unwrap();
        }
        singles.push(t.elapsed().as_secs_f64());
        assert!(same(pool_src, pool_dst), "single gets into the pool differ");
    }
    let single_get = gbps(total, median(singles));

    // Device memory: blocks put from and read into device buffers.
    fill_random(pinned_src.as_mut(), 4);
    // SAFETY: pinned source and device destination of `total` bytes.
    unsafe { sys::cuMemcpyHtoDAsync_v2(dev, pinned_src.ptr.cast(), total, stream.cu_stream()) }
        .result()
        .unwrap();
    stream.synchronize().unwrap();
    // SAFETY: context current; freed at the end of main.
    let dev_out = unsafe { result::malloc_sync(total) }.unwrap();
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        tier.clear().unwrap();
        let items: Vec<(BlockId, u64, usize)> = (0..a.blocks)
            .map(|n| (id(n), dev + (n * a.block) as u64, a.block))
            .collect();
        let t = Instant::now();
        // SAFETY: every range lies inside `dev`, which nothing writes meanwhile.
        let results = unsafe { tier.put_from_device_batch(&items) };
        puts.push(t.elapsed().as_secs_f64());
        assert!(results.iter().all(|r| r.is_ok()));
        // SAFETY: poisons the whole of dev_out, owned here.
        unsafe { result::memset_d8_sync(dev_out, 0x5A ^ rep as u8, total) }.unwrap();
        // The memset may still run when it returns, and the tier's streams do not wait
        // for it: it could land on the first copies of the read below.
        result::ctx::synchronize().unwrap();
        let reads: Vec<(BlockId, u64, usize)> = (0..a.blocks)
            .map(|n| (id(n), dev_out + (n * a.block) as u64, a.block))
            .collect();
        let t = Instant::now();
        // SAFETY: disjoint ranges inside dev_out, owned here.
        let results = unsafe { tier.get_into_device_batch(&reads) };
        gets.push(t.elapsed().as_secs_f64());
        assert!(results.iter().all(|r| matches!(r, Ok(n) if *n == a.block)));
        poison(pinned_dst.as_mut(), 0);
        // SAFETY: device source and pinned destination of `total` bytes.
        unsafe {
            sys::cuMemcpyDtoHAsync_v2(pinned_dst.ptr.cast(), dev_out, total, stream.cu_stream())
        }
        .result()
        .unwrap();
        stream.synchronize().unwrap();
        assert!(
            same(pinned_src.as_ref(), pinned_dst.as_ref()),
            "device round trip differs (rep {rep})"
        );
    }
    rows.push((
        "device memory",
        (gbps(total, median(puts)), gbps(total, median(gets))),
    ));

    println!();
    println!("| path ({card}) | put GB/s | % of H2D ceiling | get GB/s | % of D2H ceiling |");
    println!("|---|---|---|---|---|");
    println!(
        "| ceiling: one 1 GiB pinned cuMemcpyAsync | {:.1} | 100 | {:.1} | 100 |",
        ceiling.0, ceiling.1
    );
    for (name, (put, get)) in &rows {
        println!(
            "| {name} | {put:.1} | {:.0} | {get:.1} | {:.0} |",
            100.0 * put / ceiling.0,
            100.0 * get / ceiling.1
        );
    }
    println!(
        "| registered pool, one get per block (demotion path) | - | - | {single_get:.1} | {:.0} |",
        100.0 * single_get / ceiling.1
    );
    println!();
    println!(
        "device copies in the tier's kernel: {}",
        tier.uses_copy_kernel()
    );
    println!(
        "registering the {} MiB pool below: {register_ms:.1} ms; staged bytes {}, direct bytes {}",
        region.len >> 20,
        tier.staged_bytes(),
        tier.direct_bytes()
    );
    drop(tier);
    drop(below);
    let _ = std::fs::remove_file(&pool_path);
    // SAFETY: allocated above with malloc_sync, no copy in flight.
    unsafe {
        result::free_sync(dev).unwrap();
        result::free_sync(dev_out).unwrap();
    }
}
