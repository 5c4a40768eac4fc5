//! The store's device paths against the PCIe ceiling of the same run: what an engine
//! moving its own GPU KV through a `CascadeStore` gets.
//!
//! ```text
//! cargo build --release -p cascade-gpu --example store_bench
//! LD_LIBRARY_PATH=/usr/local/nvidia/lib64 target/release/examples/store_bench [--reps 5] [--spill-gib 8] [--only PART,...]
//! ```
//!
//! In one process, medians of `--reps`:
//! - the ceiling: one 1 GiB pinned copy each way (`measure_pinned_copy`);
//! - spill: `--spill-gib` GiB of 128 KiB blocks put from device memory with
//!   `put_device_batch` of 256 through a 1 GiB GPU tier over an shm tier (each batch
//!   that overflows the GPU tier demotes its coldest blocks into the registered pool as
//!   one batched DMA first), then read back into device memory with `get_device_batch` of
//!   256 (promotion on read off: an engine reading its KV back into its own memory);
//! - GPU -> shm demotion as the store does it (`free_up` of the whole 1 GiB GPU tier:
//!   one batch), and promotion back (a `get_device_batch` with promotion on: each batch
//!   read into device memory and moved up into the GPU tier, both DMAs from the pool;
//!   the promotion's own time is that minus the same read with promotion off);
//! - a store with no GPU tier (shm only): `put_device_batch` / `get_device_batch` of
//!   contiguous blocks, and `put_from_batch` / `get_into_batch` of blocks gathered from
//!   and scattered into 32 device pieces each (128 KiB blocks of 4 KiB pieces, and 1 MiB
//!   blocks of 32 KiB pieces: one 16-token block of a 16-layer model's K and V).
//!
//! - where a device put into shm spends its time ("shm put parts"): the DMA alone, the
//!   shm tier's batch put with that DMA as its fill, and with a fill that writes nothing.
//!
//! `--only` runs the parts whose names start with one of the given words (the ceiling
//! is always measured).
//!
//! Every read lands in device memory poisoned before it and is compared byte for byte
//! with what was put (copied back to pinned host memory for the comparison, untimed).
//! GB/s are 1e9 bytes/s.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cascade_core::config::ByteSize;
use cascade_core::device::{Dest, DeviceRegion, HostDeviceCopy, Source};
use cascade_core::store::StorePolicy;
use cascade_core::{BlockId, CascadeStore, Tier};
use cascade_gpu::{DeviceContext, GpuTier, GpuTierConfig, device_access, measure_pinned_copy};
use cascade_shm::{ShmTier, ShmTierConfig};
use cudarc::driver::result;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

const GIB: usize = 1 << 30;
const BATCH: usize = 256;

struct Args {
    reps: usize,
    spill: usize,
    /// Parts to run (names starting with one of these); all when empty.
    only: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        reps: 5,
        spill: 8 * GIB,
        only: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv[1..].chunks(2) {
        if pair[0] == "--only" {
            let parts = pair.get(1).expect("--only PART[,PART...]");
            a.only = parts.split(',').map(str::to_string).collect();
            continue;
        }
        let value: usize = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("--flag NUMBER");
        match pair[0].as_str() {
            "--reps" => a.reps = value,
            "--spill-gib" => a.spill = value * GIB,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(n as u128 * 0x9E37_79B9_7F4A_7C15 + 11)
}

/// Pinned host memory for the bench's own buffers (cached, not write-combined).
struct Pinned {
    ptr: *mut u8,
    len: usize,
}

impl Pinned {
    fn new(len: usize) -> Self {
        // SAFETY: a context is current (bound in main); freed in Drop.
        let ptr = unsafe { result::malloc_host(len, 0) }.unwrap().cast::<u8>();
        let mut p = Self { ptr, len };
        p.as_mut().par_chunks_mut(1 << 20).for_each(|c| c.fill(0));
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

// SAFETY: the buffer is plain host memory owned by the value; shared access hands out
// `&[u8]` only.
unsafe impl Sync for Pinned {}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host, freed once.
        unsafe { result::free_host(self.ptr.cast()) }.unwrap();
    }
}

/// Device memory of the bench, freed at the end.
struct Device {
    ptr: u64,
    len: usize,
}

impl Device {
    fn new(len: usize) -> Self {
        // SAFETY: a context is current; freed in Drop.
        let ptr = unsafe { result::malloc_sync(len) }.unwrap();
        Self { ptr, len }
    }
    fn poison(&self, byte: u8) {
        // SAFETY: the whole allocation, owned here, no copy in flight.
        unsafe { result::memset_d8_sync(self.ptr, byte, self.len) }.unwrap();
        // cuMemsetD8 on device memory may return before it is done, and the store's
        // copies run on non-blocking streams that do not wait for it: without this, the
        // poison lands on the first copies of the next call.
        result::ctx::synchronize().unwrap();
    }
    fn upload(&self, host: &Pinned) {
        // SAFETY: both hold `len` bytes; synchronous copy.
        unsafe { result::memcpy_htod_sync(self.ptr, host.as_ref()) }.unwrap();
    }
    fn download(&self, host: &mut Pinned) {
        // SAFETY: both hold `len` bytes; synchronous copy.
        unsafe { result::memcpy_dtoh_sync(host.as_mut(), self.ptr) }.unwrap();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync, no copy in flight.
        unsafe { result::free_sync(self.ptr) }.unwrap();
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.par_chunks(1 << 20)
        .zip(b.par_chunks(1 << 20))
        .all(|(x, y)| x == y)
}

/// Checks that `dst` (device) holds the first `len` bytes of `expected` (host).
fn check(dst: &Device, check_buf: &mut Pinned, expected: &Pinned, len: usize, what: &str) {
    check_buf.as_mut()[..len]
        .par_chunks_mut(1 << 20)
        .for_each(|c| c.fill(0x3C));
    dst.download(check_buf);
    assert!(
        same(&check_buf.as_ref()[..len], &expected.as_ref()[..len]),
        "{what}: bytes read differ from bytes put"
    );
}

fn pool_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn shm_tier(name: &str, capacity: usize) -> (Arc<dyn Tier>, PathBuf) {
    let path = pool_dir().join(format!(
        "cascade-store-bench-{}-{name}.pool",
        std::process::id()
    ));
    let config = ShmTierConfig::new(&path, ByteSize::b(capacity as u64));
    (Arc::new(ShmTier::open(name, &config).unwrap()), path)
}

fn gpu_tier(name: &str, capacity: usize) -> Arc<dyn Tier> {
    let config = GpuTierConfig {
        capacity: ByteSize::b(capacity as u64),
        ..GpuTierConfig::default()
    };
    Arc::new(GpuTier::open(name, &config).unwrap())
}

fn store(tiers: Vec<Arc<dyn Tier>>, promote: bool) -> CascadeStore {
    let policy = StorePolicy {
        dedup: false,
        promote_on_read: promote,
        ..StorePolicy::default()
    };
    CascadeStore::new(tiers, policy)
        .unwrap()
        .with_device_access(device_access())
}

/// Contiguous blocks of `block` bytes at `base`, `count` of them, as (id, ptr, len).
fn blocks(base: u64, block: usize, count: usize) -> Vec<(BlockId, u64, usize)> {
    (0..count)
        .map(|n| (id(n), base + (n * block) as u64, block))
        .collect()
}

fn put_all(store: &CascadeStore, items: &[(BlockId, u64, usize)]) -> f64 {
    let t = Instant::now();
    for batch in items.chunks(BATCH) {
        // SAFETY: every range lies inside the bench's device source, not written meanwhile.
        let results = unsafe { store.put_device_batch(batch) };
        assert!(
            results.iter().all(Result::is_ok),
            "put_device_batch: {:?}",
            results.iter().find(|r| r.is_err())
        );
    }
    t.elapsed().as_secs_f64()
}

fn get_all(store: &CascadeStore, items: &[(BlockId, u64, usize)]) -> f64 {
    let t = Instant::now();
    for batch in items.chunks(BATCH) {
        // SAFETY: disjoint ranges inside the bench's device destination, owned here.
        let results = unsafe { store.get_device_batch(batch) };
        for (r, (_, _, len)) in results.iter().zip(batch) {
            assert!(
                matches!(r, Ok(Some(n)) if n == len),
                "get_device_batch: {r:?}"
            );
        }
    }
    t.elapsed().as_secs_f64()
}

struct Buffers {
    host_src: Pinned,
    host_check: Pinned,
    src: Device,
    dst: Device,
}

fn spill(a: &Args, b: &mut Buffers) -> (f64, f64) {
    let block = 128 << 10;
    let count = a.spill / block;
    let (shm, path) = shm_tier("spill-shm", a.spill + GIB);
    let store = store(vec![gpu_tier("spill-gpu", GIB), shm], false);
    let puts = blocks(b.src.ptr, block, count);
    let gets = blocks(b.dst.ptr, block, count);
    let (mut put_t, mut get_t) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        store.clear().unwrap();
        put_t.push(put_all(&store, &puts));
        let stats = store.stats();
        assert_eq!(stats.blocks as usize, count);
        assert!(stats.tiers[0].bytes as usize <= GIB);
        assert!(stats.tiers[0].demotions as usize >= count - GIB / block);
        b.dst.poison(0x5A ^ rep as u8);
        get_t.push(get_all(&store, &gets));
        check(&b.dst, &mut b.host_check, &b.host_src, a.spill, "spill");
        if rep == 0 {
            println!(
                "spill: GPU tier {} blocks, shm {} blocks, demotions {}, fallback puts {}",
                stats.tiers[0].blocks,
                stats.tiers[1].blocks,
                stats.tiers[0].demotions,
                stats.fallback_puts
            );
        }
    }
    drop(store);
    let _ = std::fs::remove_file(path);
    (gbps(a.spill, median(put_t)), gbps(a.spill, median(get_t)))
}

/// GPU -> shm demotion (`free_up`), then the batch read that promotes back, with the
/// same read in a store with promotion off beside it. Returns (demotion GB/s, read with
/// promotion GB/s, read alone GB/s, promotion alone GB/s).
fn moves(a: &Args, b: &mut Buffers) -> (f64, f64, f64, f64) {
    let block = 128 << 10;
    let count = GIB / block;
    let (shm_up, path_up) = shm_tier("moves-shm", 2 * GIB);
    let (shm_flat, path_flat) = shm_tier("moves-shm-flat", 2 * GIB);
    let promoting = store(vec![gpu_tier("moves-gpu", GIB), shm_up], true);
    let flat = store(vec![gpu_tier("moves-gpu-flat", GIB), shm_flat], false);
    let puts = blocks(b.src.ptr, block, count);
    let gets = blocks(b.dst.ptr, block, count);
    let (mut down, mut up, mut read, mut moved) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for rep in 0..a.reps {
        for s in [&promoting, &flat] {
            s.clear().unwrap();
            put_all(s, &puts);
        }
        let t = Instant::now();
        moved = promoting.free_up(0, GIB as u64).unwrap();
        down.push(t.elapsed().as_secs_f64());
        flat.free_up(0, GIB as u64).unwrap();
        assert!(
            (0..count).all(|n| promoting.tier_of(id(n)) == Some(1)),
            "all demoted"
        );
        assert!((0..count).all(|n| flat.tier_of(id(n)) == Some(1)));
        b.dst.poison(0x77 ^ rep as u8);
        read.push(get_all(&flat, &gets));
        check(&b.dst, &mut b.host_check, &b.host_src, GIB, "read from shm");
        b.dst.poison(0x99 ^ rep as u8);
        up.push(get_all(&promoting, &gets));
        check(
            &b.dst,
            &mut b.host_check,
            &b.host_src,
            GIB,
            "read with promotion",
        );
        let promoted = (0..count)
            .filter(|&n| promoting.tier_of(id(n)) == Some(0))
            .count();
        assert!(
            promoted * block >= GIB * 9 / 10,
            "promoted {promoted} of {count}"
        );
        // What the GPU tier now holds is the promoted bytes.
        b.dst.poison(0x12);
        get_all(&promoting, &gets);
        check(
            &b.dst,
            &mut b.host_check,
            &b.host_src,
            GIB,
            "promoted blocks",
        );
    }
    drop((promoting, flat));
    let _ = std::fs::remove_file(path_up);
    let _ = std::fs::remove_file(path_flat);
    let (down, up, read) = (median(down), median(up), median(read));
    (
        gbps(moved as usize, down),
        gbps(GIB, up),
        gbps(GIB, read),
        gbps(GIB, (up - read).max(f64::MIN_POSITIVE)),
    )
}

/// Pieces of `piece` bytes where `got` differs from `want`: the count and the first few
/// positions (block, piece) in a layout of `count` blocks of `pieces` pieces, layer-major.
fn wrong_pieces(
    got: &[u8],
    want: &[u8],
    piece: usize,
    count: usize,
) -> (usize, Vec<(usize, usize)>) {
    let bad: Vec<usize> = got
        .par_chunks(piece)
        .zip(want.par_chunks(piece))
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .map(|(i, _)| i)
        .collect();
    let first = bad
        .iter()
        .take(6)
        .map(|&i| (i % count, i / count))
        .collect();
    (bad.len(), first)
}

/// A shm-only store: contiguous blocks, then blocks of `pieces` pieces each laid out
/// layer-major (piece p of every block in one run, as an engine keeps layer p), for
/// 1 GiB of `block`-byte blocks. Gathered round trips are checked piece by piece and a
/// wrong one is reported (with where it was wrong: the put or the get) instead of
/// stopping the run.
fn host_store(a: &Args, b: &mut Buffers, block: usize, pieces: usize) -> [((f64, f64), bool); 2] {
    let total = GIB;
    let count = total / block;
    let piece = block / pieces;
    let (shm, path) = shm_tier("host-only", total + GIB / 4);
    let store = store(vec![shm], false);
    let puts = blocks(b.src.ptr, block, count);
    let gets = blocks(b.dst.ptr, block, count);
    let region = |base: u64, n: usize, p: usize| {
        // SAFETY: inside the bench's device buffers (count * block bytes each), which
        // live until main returns and are not touched by anything else during a call.
        unsafe { DeviceRegion::new(base + (p * count * piece + n * piece) as u64, piece, 0) }
    };
    let layout = |base: u64| -> Vec<Vec<DeviceRegion>> {
        (0..count)
            .map(|n| (0..pieces).map(|p| region(base, n, p)).collect())
            .collect()
    };
    let (src_pieces, dst_pieces) = (layout(b.src.ptr), layout(b.dst.ptr));
    // The blocks as the gathered put makes them: block n is piece p of layer p, in order.
    let mut gathered = vec![0u8; total];
    let host = b.host_src.as_ref();
    gathered
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(n, out)| {
            for p in 0..pieces {
                let at = p * count * piece + n * piece;
                out[p * piece..(p + 1) * piece].copy_from_slice(&host[at..at + piece]);
            }
        });
    let mut t = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    let mut reported = false;
    for rep in 0..a.reps {
        store.clear().unwrap();
        t[0].0.push(put_all(&store, &puts));
        b.dst.poison(0x21 ^ rep as u8);
        t[0].1.push(get_all(&store, &gets));
        check(
            &b.dst,
            &mut b.host_check,
            &b.host_src,
            total,
            "shm-only contiguous",
        );

        store.clear().unwrap();
        let start = Instant::now();
        for (k, chunk) in src_pieces.chunks(BATCH).enumerate() {
            let batch: Vec<(BlockId, Source<'_>)> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| (id(k * BATCH + i), Source::Device(r)))
                .collect();
            assert!(store.put_from_batch(&batch).iter().all(Result::is_ok));
        }
        t[1].0.push(start.elapsed().as_secs_f64());
        // The put: every block read whole must be its pieces in order.
        b.dst.poison(0x65);
        get_all(&store, &gets);
        b.host_check.as_mut()[..total].fill(0);
        b.dst.download(&mut b.host_check);
        let put_wrong = wrong_pieces(&b.host_check.as_ref()[..total], &gathered, piece, count);
        b.dst.poison(0x43 ^ rep as u8);
        let start = Instant::now();
        for (k, chunk) in dst_pieces.chunks(BATCH).enumerate() {
            let mut batch: Vec<(BlockId, Dest<'_>)> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| (id(k * BATCH + i), Dest::Device(r)))
                .collect();
            for r in store.get_into_batch(&mut batch) {
                assert_eq!(r.unwrap(), Some(block));
            }
        }
        t[1].1.push(start.elapsed().as_secs_f64());
        // The get: scattered into the same layout, the destination equals the source.
        b.host_check.as_mut()[..total].fill(0);
        b.dst.download(&mut b.host_check);
        let get_wrong = wrong_pieces(
            &b.host_check.as_ref()[..total],
            &b.host_src.as_ref()[..total],
            piece,
            count,
        );
        if put_wrong.0 + get_wrong.0 > 0 && !reported {
            println!(
                "WRONG BYTES, {block} B blocks of {pieces} pieces, rep {rep}: put {} of {} pieces wrong (first (block, piece): {:?}); get {} wrong (first (block, layer): {:?})",
                put_wrong.0,
                count * pieces,
                put_wrong.1,
                get_wrong.0,
                get_wrong.1
            );
            reported = true;
        }
    }
    drop(store);
    let _ = std::fs::remove_file(path);
    // Timings are kept either way; a wrong round trip is said in the table.
    let [contiguous, gathered] = t.map(|(p, g)| (gbps(total, median(p)), gbps(total, median(g))));
    [(contiguous, true), (gathered, !reported)]
}

/// The host copier alone (the DMA under host tiers' device copies): `count` copies of
/// `size` bytes between pinned memory and device ranges in a scattered order, each way,
/// in one call; checked, and timed (median of `reps`).
fn copier_alone(a: &Args, b: &mut Buffers, size: usize, count: usize) -> (bool, f64, f64) {
    use cascade_core::device::{DeviceCopier, HostDeviceCopy};
    let copier = cascade_gpu::HostCopier::new(DeviceContext::get(0).unwrap(), &[]).unwrap();
    let perm = |i: usize| (i * 7919) % count;
    let host = b.host_check.ptr as usize;
    let down: Vec<HostDeviceCopy> = (0..count)
        .map(|i| HostDeviceCopy {
            host: host + i * size,
            device: b.src.ptr + (perm(i) * size) as u64,
            len: size,
        })
        .collect();
    let up: Vec<HostDeviceCopy> = (0..count)
        .map(|i| HostDeviceCopy {
            host: b.host_src.ptr as usize + i * size,
            device: b.dst.ptr + (perm(i) * size) as u64,
            len: size,
        })
        .collect();
    let (mut to_host, mut to_device, mut right) = (Vec::new(), Vec::new(), true);
    for _ in 0..a.reps {
        b.host_check.as_mut()[..count * size].fill(0x5C);
        let t = Instant::now();
        // SAFETY: device ranges inside b.src; host ranges inside b.host_check, disjoint,
        // touched by nothing else during the call.
        unsafe { copier.to_host(&down) }.unwrap();
        to_host.push(t.elapsed().as_secs_f64());
        let hc = b.host_check.as_ref();
        let hs = b.host_src.as_ref();
        right &= (0..count)
            .into_par_iter()
            .all(|i| hc[i * size..(i + 1) * size] == hs[perm(i) * size..(perm(i) + 1) * size]);
        b.dst.poison(0x3A);
        let t = Instant::now();
        // SAFETY: host ranges inside b.host_src; device ranges inside b.dst, disjoint.
        unsafe { copier.to_device(&up) }.unwrap();
        to_device.push(t.elapsed().as_secs_f64());
        b.host_check.as_mut()[..count * size].fill(0);
        b.dst.download(&mut b.host_check);
        let hc = b.host_check.as_ref();
        right &= (0..count)
            .into_par_iter()
            .all(|i| hc[perm(i) * size..(perm(i) + 1) * size] == hs[i * size..(i + 1) * size]);
    }
    (
        right,
        gbps(count * size, median(to_device)),
        gbps(count * size, median(to_host)),
    )
}

/// What a GPU -> shm demotion is made of, each part alone on 1 GiB of 128 KiB blocks:
/// the GPU tier's batched read into pinned memory (the DMA) and the shm tier's batch
/// fill from pinned memory by memcpy (reserve, copy, checksum, slot record, index).
fn demotion_parts(a: &Args, b: &mut Buffers) -> (f64, f64) {
    let block = 128 << 10;
    let count = GIB / block;
    let gpu = gpu_tier("parts-gpu", GIB);
    let (shm, path) = shm_tier("parts-shm", 2 * GIB);
    // SAFETY: ranges inside b.src, not written meanwhile.
    let stored = unsafe { gpu.put_from_device_batch(&blocks(b.src.ptr, block, count)) };
    assert!(stored.iter().all(Result::is_ok));
    let ids: Vec<BlockId> = (0..count).map(id).collect();
    let (mut dma, mut fill) = (Vec::new(), Vec::new());
    for _ in 0..a.reps {
        let mut outs: Vec<(BlockId, &mut [u8])> = ids
            .iter()
            .copied()
            .zip(b.host_check.as_mut()[..GIB].chunks_mut(block))
            .collect();
        let t = Instant::now();
        let got = gpu.get_batch(&mut outs);
        dma.push(t.elapsed().as_secs_f64());
        assert!(got.iter().all(|r| matches!(r, Ok(n) if *n == block)));
        shm.clear().unwrap();
        let items: Vec<(BlockId, usize)> = ids.iter().map(|&i| (i, block)).collect();
        let src = b.host_src.as_ref();
        let t = Instant::now();
        let done = shm.put_with_batch(&items, &mut |targets| {
            targets
                .iter_mut()
                .map(|(i, buf)| {
                    buf.copy_from_slice(&src[*i * block..(*i + 1) * block]);
                    Ok(())
                })
                .collect()
        });
        fill.push(t.elapsed().as_secs_f64());
        assert!(done.iter().all(Result::is_ok));
    }
    drop(shm);
    let _ = std::fs::remove_file(path);
    (gbps(GIB, median(dma)), gbps(GIB, median(fill)))
}

/// Where a device put into shm spends its time, on 1 GiB of `block`-byte blocks in
/// batches of [`BATCH`]: the DMA alone into the registered pool in calls of 4 MiB (the
/// tier's fill chunk), the shm tier's `put_with_batch` with that DMA as its fill (no
/// store around it), the same with the blocks hashed on the GPU during the DMA (the tier
/// stores those checksums instead of hashing), and with a fill that writes nothing (the
/// tier's own work: reserve, hash from memory, slot record, index). GB/s of each, in
/// this order.
fn shm_put_parts(a: &Args, b: &mut Buffers, block: usize) -> (f64, f64, f64, f64) {
    let count = GIB / block;
    let (shm, path) = shm_tier("parts-put", GIB + GIB / 4);
    let region = shm.host_region().expect("the shm tier lends its pool");
    let copier = device_access()
        .copier(0, &[region])
        .expect("a copier with the pool registered");
    let per_call = ((4 << 20) / block).max(1);
    let copies: Vec<HostDeviceCopy> = (0..count)
        .map(|n| HostDeviceCopy {
            host: region.base as usize + n * block,
            device: b.src.ptr + (n * block) as u64,
            len: block,
        })
        .collect();
    let ids: Vec<BlockId> = (0..count).map(id).collect();
    let src = b.src.ptr;
    let (mut dma, mut tier_dma, mut tier_hashed, mut tier_only) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.reps {
        let t = Instant::now();
        for call in copies.chunks(per_call) {
            // SAFETY: device ranges inside b.src; host ranges inside the registered pool,
            // which no block uses yet (the tier is empty).
            unsafe { copier.to_host(call) }.unwrap();
        }
        dma.push(t.elapsed().as_secs_f64());
        for (times, fill) in [
            (&mut tier_dma, PartFill::Dma),
            (&mut tier_hashed, PartFill::DmaHashed),
            (&mut tier_only, PartFill::Nothing),
        ] {
            shm.clear().unwrap();
            let t = Instant::now();
            for (k, batch) in ids.chunks(BATCH).enumerate() {
                let items: Vec<(BlockId, usize)> = batch.iter().map(|&i| (i, block)).collect();
                let done = shm.put_with_batch_checked(&items, &mut |targets| {
                    let call: Vec<HostDeviceCopy> = targets
                        .iter_mut()
                        .map(|(i, buf)| HostDeviceCopy {
                            host: buf.as_mut_ptr() as usize,
                            device: src + ((k * BATCH + *i) * block) as u64,
                            len: block,
                        })
                        .collect();
                    let blocks: Vec<(usize, usize)> =
                        call.iter().map(|c| (c.host, c.len)).collect();
                    match fill {
                        // SAFETY: as above; the targets are this batch's reserved room.
                        PartFill::Dma => unsafe { copier.to_host(&call) }.unwrap(),
                        PartFill::DmaHashed => {
                            // SAFETY: as above; nothing writes b.src meanwhile.
                            let sums = unsafe { copier.to_host_hashed(&call, &blocks) }.unwrap();
                            return sums.into_iter().map(Ok).collect();
                        }
                        PartFill::Nothing => {}
                    }
                    targets.iter().map(|_| Ok(None)).collect()
                });
                assert!(done.iter().all(Result::is_ok));
            }
            times.push(t.elapsed().as_secs_f64());
        }
    }
    drop(copier);
    drop(shm);
    let _ = std::fs::remove_file(path);
    (
        gbps(GIB, median(dma)),
        gbps(GIB, median(tier_dma)),
        gbps(GIB, median(tier_hashed)),
        gbps(GIB, median(tier_only)),
    )
}

/// What the fill of a "shm put parts" round does.
#[derive(Clone, Copy)]
enum PartFill {
    /// The DMA; the tier hashes every block from memory.
    Dma,
    /// The DMA with the blocks hashed on the GPU; the tier stores those checksums.
    DmaHashed,
    /// Nothing: the tier's own work alone.
    Nothing,
}

fn main() {
    let a = args();
    let context = DeviceContext::get(0).expect("a CUDA device");
    let ctx = context.context();
    ctx.bind_to_thread().unwrap();
    let card = ctx.name().unwrap();
    println!(
        "card: {card}; reps: {} (medians); spill {} GiB of 128 KiB blocks through a 1 GiB GPU tier, batches of {BATCH}; pools in {}",
        a.reps,
        a.spill / GIB,
        pool_dir().display()
    );
    let rate = measure_pinned_copy(0, GIB, a.reps).expect("pinned-copy ceiling");
    let (h2d, d2h) = (rate.host_to_device_gbps, rate.device_to_host_gbps);
    ctx.bind_to_thread().unwrap();
    let len = a.spill.max(GIB);
    let mut host_src = Pinned::new(len);
    host_src
        .as_mut()
        .par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, c)| StdRng::seed_from_u64(0xC0FFEE ^ i as u64).fill_bytes(c));
    let mut b = Buffers {
        host_check: Pinned::new(len),
        src: Device::new(len),
        dst: Device::new(len),
        host_src,
    };
    b.src.upload(&b.host_src);

    let pct = |v: f64, c: f64| 100.0 * v / c;
    let mut table = vec![
        format!("| path ({card}) | H2D GB/s | % of ceiling | D2H GB/s | % of ceiling | goal |"),
        "|---|---|---|---|---|---|".to_string(),
        format!("| ceiling: one 1 GiB pinned copy | {h2d:.1} | 100 | {d2h:.1} | 100 | |"),
    ];
    let row = |name: &str, h: f64, d: f64, goal: &str| {
        format!(
            "| {name} | {h:.1} | {:.0} | {d:.1} | {:.0} | {goal} |",
            pct(h, h2d),
            pct(d, d2h)
        )
    };
    // Each part runs on its own: one that fails is reported and the others still run.
    let only = a.only.clone();
    let mut part = |name: &str, run: &mut dyn FnMut(&mut Buffers) -> Vec<String>| {
        if !only.is_empty() && !only.iter().any(|o| name.starts_with(o.as_str())) {
            return;
        }
        let t = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut b))) {
            Ok(rows) => {
                for r in &rows {
                    println!("{r}");
                }
                table.extend(rows);
            }
            Err(_) => table.push(format!(
                "| {name}: FAILED (see the panic above) | | | | | |"
            )),
        }
        println!("({name} took {:.1} s)", t.elapsed().as_secs_f64());
    };
    part("host copier alone", &mut |b| {
        [
            (4usize << 10, 64usize),
            (4 << 10, 8192),
            (32 << 10, 8192),
            (128 << 10, 256),
            (128 << 10, 8192),
        ]
        .iter()
        .map(|&(size, count)| {
            let (right, h, d) = copier_alone(&a, b, size, count);
            row(
                &format!(
                    "host copier alone, {count} copies of {} KiB in one call ({})",
                    size >> 10,
                    if right { "bytes right" } else { "WRONG BYTES" }
                ),
                h,
                d,
                "",
            )
        })
        .collect()
    });
    part("demotion parts", &mut |b| {
        let (dma, fill) = demotion_parts(&a, b);
        vec![row(
            "demotion parts, 1 GiB: GPU tier get_batch into pinned memory (D2H) / shm put_with_batch memcpy fill, one thread (column H2D)",
            fill,
            dma,
            "",
        )]
    });
    // A put moves device -> host (D2H), a get host -> device (H2D): columns by direction.
    part("spill", &mut |b| {
        let (put, get) = spill(&a, b);
        vec![row(
            "spill: get_device_batch (H2D) / put_device_batch (D2H demotions)",
            get,
            put,
            "60%",
        )]
    });
    part("moves", &mut |b| {
        let (demote, read_promote, read_alone, promote) = moves(&a, b);
        vec![
            row(
                "promotion alone (read with promotion - read) / GPU -> shm demotion (free_up)",
                promote,
                demote,
                "80%",
            ),
            format!(
                "| batch read from shm into device memory, promotion off / on (on: two H2D copies a block) | {read_alone:.1} / {read_promote:.1} | {:.0} / {:.0} ({:.0} counting both copies) | - | - | |",
                pct(read_alone, h2d),
                pct(read_promote, h2d),
                pct(2.0 * read_promote, h2d)
            ),
        ]
    });
    for block in [128usize << 10, 1 << 20] {
        part("shm put parts", &mut |b| {
            let (dma, tier_dma, tier_hashed, tier_only) = shm_put_parts(&a, b, block);
            let kib = block >> 10;
            [
                ("DMA alone into the pool, 4 MiB a call", dma),
                ("shm put_with_batch, DMA fill (no store)", tier_dma),
                (
                    "shm put_with_batch_checked, DMA fill hashed on the GPU (no store)",
                    tier_hashed,
                ),
                ("shm put_with_batch, fill writes nothing", tier_only),
            ]
            .iter()
            .map(|(what, d)| {
                format!(
                    "| shm put parts, {kib} KiB blocks: {what} | - | - | {d:.1} | {:.0} | |",
                    pct(*d, d2h)
                )
            })
            .collect()
        });
    }
    for (block, label) in [
        (128usize << 10, "128 KiB blocks"),
        (1 << 20, "1 MiB blocks"),
    ] {
        part(label, &mut |b| {
            let [(contiguous, _), (gathered, right)] = host_store(&a, b, block, 32);
            let piece = (block / 32) >> 10;
            let checked = if right { "" } else { " (WRONG BYTES)" };
            vec![
                row(
                    &format!("shm-only store, {label}, contiguous: get / put"),
                    contiguous.1,
                    contiguous.0,
                    "85%",
                ),
                row(
                    &format!(
                        "shm-only store, {label}, 32 pieces of {piece} KiB{checked}: get / put"
                    ),
                    gathered.1,
                    gathered.0,
                    "85%",
                ),
            ]
        });
    }
    println!();
    for line in table {
        println!("{line}");
    }
}
