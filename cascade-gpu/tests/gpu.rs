//! GPU tier tests. Without a CUDA driver (CI) each test that needs a GPU prints why it
//! skipped (a failure where `CASCADE_REQUIRE` names `gpu`); the no-driver path itself is
//! checked by `open_without_driver_is_unavailable`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use cascade_core::config::ByteSize;
use cascade_core::conformance::{self, random_block};
use cascade_core::require::{self, Requirement};
use cascade_core::store::StorePolicy;
use cascade_core::{BlockId, CascadeStore, ErrorKind, MemoryTier, MemoryTierConfig, Tier};
use cascade_gpu::{GpuTier, GpuTierConfig, driver_present};

fn small_config() -> GpuTierConfig {
    GpuTierConfig {
        capacity: ByteSize::mib(64),
        staging_buffer_size: ByteSize::kib(256),
        staging_buffers: 4,
        ..GpuTierConfig::default()
    }
}

/// Opens a tier, or says why the test skipped.
fn open_or_skip(config: &GpuTierConfig) -> Option<GpuTier> {
    match GpuTier::open("gpu0", config) {
        Ok(tier) => Some(tier),
        Err(e) if e.kind() == ErrorKind::Unavailable => {
            require::skip(Requirement::Gpu, format!("no usable CUDA device ({e})"));
            None
        }
        Err(e) => panic!("opening the GPU tier failed: {e}"),
    }
}

/// A 64 MiB shm pool named `file` in a fresh directory, on /dev/shm where it exists:
/// Linux pins shmem pages for long, but not pages of a disk-backed file, so DMA reaches
/// the pool directly as in a deployment. The directory goes when the guard drops.
fn shm_pool(file: &str) -> (tempfile::TempDir, cascade_shm::ShmTierConfig) {
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let config = cascade_shm::ShmTierConfig {
        path: Some(dir.path().join(file)),
        capacity: ByteSize::mib(64),
        ..cascade_shm::ShmTierConfig::default()
    };
    (dir, config)
}

/// A store of one shm tier (returned too, for its counters) that takes device memory.
fn shm_only_store(
    name: &str,
    config: &cascade_shm::ShmTierConfig,
) -> (Arc<cascade_shm::ShmTier>, CascadeStore) {
    let shm = Arc::new(cascade_shm::ShmTier::open(name, config).unwrap());
    let store = CascadeStore::new(
        vec![Arc::clone(&shm) as Arc<dyn Tier>],
        StorePolicy::default(),
    )
    .unwrap()
    .with_device_access(cascade_gpu::device_access());
    (shm, store)
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) * 0x9E37_79B9_7F4A_7C15 + 17)
}

#[test]
fn open_without_driver_is_unavailable() {
    if driver_present() {
        eprintln!("skipped: a CUDA driver is present; the no-driver path is not reachable here");
        return;
    }
    let err = GpuTier::open("gpu0", &GpuTierConfig::default())
        .err()
        .expect("no driver, no tier");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("libcuda"),
        "the message says what is missing: {err}"
    );
}

#[test]
fn invalid_config_is_refused_before_touching_cuda() {
    let config = GpuTierConfig {
        streams: 0,
        ..GpuTierConfig::default()
    };
    let err = GpuTier::open("gpu0", &config).err().expect("bad config");
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// A non-persistent tier: each opening is a fresh slab, so the kit's reopen check is
/// skipped by its own rule.
fn kit_subject() -> Option<conformance::Subject> {
    open_or_skip(&small_config())?;
    Some(conformance::Subject::new(|| {
        Ok(Arc::new(GpuTier::open("gpu0", &small_config())?) as Arc<dyn Tier>)
    }))
}

cascade_core::conformance_tests!(mod gpu_kit, kit_subject);

/// Pageable buffers (so the staging path), several sizes crossing the staging buffers,
/// outputs poisoned before each read. Small buffers copy on the caller's thread; buffers
/// of 1 MiB and more go to the copy crew, several at once.
#[test]
fn pageable_round_trip_with_poisoned_outputs() {
    pageable_round_trip(&small_config());
    pageable_round_trip(&GpuTierConfig {
        staging_buffer_size: ByteSize::mib(2),
        staging_buffers: 5,
        copy_threads: 4,
        ..small_config()
    });
}

fn pageable_round_trip(config: &GpuTierConfig) {
    let Some(tier) = open_or_skip(config) else {
        return;
    };
    let sizes = [
        1usize,
        255,
        4096,
        128 << 10,
        (256 << 10) + 3,
        3 << 20,
        0,
        (9 << 20) + 5,
        64 << 10,
    ];
    let blocks: Vec<(BlockId, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(n, &len)| (id(n as u64), random_block(n as u64 + 40, len)))
        .collect();
    for (id, data) in &blocks {
        tier.put(*id, data).unwrap();
    }
    for poison in [0x00u8, 0xFF, 0xA5] {
        for (id, data) in &blocks {
            let mut out = vec![poison; data.len() + 9];
            assert_eq!(tier.get(*id, &mut out).unwrap(), data.len());
            assert!(
                out[..data.len()] == data[..],
                "block {id} differs (poison {poison:#x})"
            );
            assert!(
                out[data.len()..].iter().all(|&b| b == poison),
                "bytes past the block were written"
            );
        }
    }
    let items: Vec<(BlockId, &[u8])> = blocks.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    assert!(tier.put_batch(&items).into_iter().all(|r| r.is_ok()));
    let mut outs: Vec<Vec<u8>> = blocks.iter().map(|(_, d)| vec![0x5A; d.len()]).collect();
    let mut requests: Vec<(BlockId, &mut [u8])> = blocks
        .iter()
        .zip(outs.iter_mut())
        .map(|((id, _), o)| (*id, o.as_mut_slice()))
        .collect();
    for (r, (_, d)) in tier.get_batch(&mut requests).into_iter().zip(&blocks) {
        assert_eq!(r.unwrap(), d.len());
    }
    for ((_, d), o) in blocks.iter().zip(&outs) {
        assert!(d == o);
    }
}

/// Many threads at once, each with its own blocks, over every stream.
#[test]
fn many_streams_at_once() {
    let config = GpuTierConfig {
        streams: 8,
        ..small_config()
    };
    let Some(tier) = open_or_skip(&config) else {
        return;
    };
    let tier = Arc::new(tier);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let tier = Arc::clone(&tier);
            scope.spawn(move || {
                for round in 0..6u64 {
                    let base = t * 1000 + round * 100;
                    let blocks: Vec<(BlockId, Vec<u8>)> = (0..24)
                        .map(|k| (id(base + k), random_block(base + k, 64 << 10)))
                        .collect();
                    let items: Vec<(BlockId, &[u8])> =
                        blocks.iter().map(|(id, d)| (*id, d.as_slice())).collect();
                    for r in tier.put_batch(&items) {
                        r.unwrap();
                    }
                    let mut outs: Vec<Vec<u8>> =
                        blocks.iter().map(|_| vec![0xC3; 64 << 10]).collect();
                    let mut req: Vec<(BlockId, &mut [u8])> = blocks
                        .iter()
                        .zip(outs.iter_mut())
                        .map(|((id, _), o)| (*id, o.as_mut_slice()))
                        .collect();
                    for r in tier.get_batch(&mut req) {
                        r.unwrap();
                    }
                    for ((_, d), o) in blocks.iter().zip(&outs) {
                        assert!(d == o, "thread {t} round {round}: bytes differ");
                    }
                    for (id, _) in &blocks {
                        assert!(tier.remove(*id).unwrap());
                    }
                }
            });
        }
    });
    assert_eq!(tier.used(), 0);
}

/// Blocks demoted from the GPU into the tier below (its host memory registered with
/// CUDA, so demotion is one DMA into the pool) and promoted back on read, through the
/// store.
/// With `require_registered` off, the pool may be one the driver refuses to pin (a
/// file on a disk file system): moves are then staged, and must still be right.
fn demote_and_promote(below: Arc<dyn Tier>, require_registered: bool) {
    let config = GpuTierConfig {
        capacity: ByteSize::mib(4),
        ..small_config()
    };
    let Some(gpu) = open_or_skip(&config) else {
        return;
    };
    let gpu = Arc::new(gpu);
    let pool_len = below.host_region().map(|r| r.len).unwrap();
    let store = CascadeStore::new(
        vec![gpu.clone() as Arc<dyn Tier>, below.clone()],
        StorePolicy::default(),
    )
    .unwrap();
    // Whole pages of the pool are registered (a partial page at either end is not).
    let registered = gpu.registered_bytes() > 0;
    assert!(
        registered || !require_registered,
        "the pool below was not registered"
    );
    assert!(
        !registered || gpu.registered_bytes() + 2 * 4096 >= pool_len,
        "the pool below is registered: {} of {pool_len} bytes",
        gpu.registered_bytes()
    );
    let len = 512 << 10;
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..24)
        .map(|n| (id(500 + n), random_block(500 + n, len)))
        .collect();
    let direct_before = gpu.direct_bytes();
    for (id, data) in &blocks {
        store.put(*id, data).unwrap();
        assert!(gpu.used() <= gpu.capacity());
    }
    let demoted = blocks
        .iter()
        .filter(|(id, _)| store.tier_of(*id) == Some(1))
        .count();
    assert!(
        demoted >= 16,
        "a 4 MiB GPU tier holds at most 8 blocks of 512 KiB; {demoted} demoted"
    );
    // The puts came from pageable vectors (staged); demotions went by DMA straight into
    // the registered pool (allowing for a block on an unregistered partial page).
    let demotions = store.stats().demotions as usize;
    let direct = (gpu.direct_bytes() - direct_before) as usize;
    assert!(
        !registered || direct >= demotions.saturating_sub(2) * len,
        "{demotions} demotions moved only {direct} bytes by direct DMA"
    );
    for (id, data) in &blocks {
        let mut out = vec![0x3Cu8; len];
        assert_eq!(store.get(*id, &mut out).unwrap(), Some(len));
        assert!(out == *data, "block {id} differs after demotion/promotion");
    }
    assert!(
        store.stats().promotions > 0,
        "reads of demoted blocks promoted them"
    );
    for (id, data) in blocks.iter().rev() {
        let mut out = vec![0x3Cu8; len];
        assert_eq!(store.get(*id, &mut out).unwrap(), Some(len));
        assert!(out == *data);
    }
}

#[test]
fn demotion_and_promotion_with_memory_below() {
    let below = MemoryTier::open(
        "mem0",
        &MemoryTierConfig {
            capacity: ByteSize::mib(64),
            prefault: true,
        },
    )
    .unwrap();
    demote_and_promote(Arc::new(below), true);
}

#[test]
fn demotion_and_promotion_with_shm_below() {
    let (dir, config) = shm_pool("gpu-test.pool");
    let below = cascade_shm::ShmTier::open("shm0", &config).unwrap();
    let on_shmem = dir.path().starts_with("/dev/shm");
    demote_and_promote(Arc::new(below), on_shmem);
}

/// A pool in the temporary directory, often on a disk file system whose pages the
/// kernel will not pin: the store still opens and every move is right (staged).
#[test]
fn demotion_and_promotion_with_a_pool_the_driver_may_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let config = cascade_shm::ShmTierConfig {
        path: Some(dir.path().join("gpu-test.pool")),
        capacity: ByteSize::mib(64),
        ..cascade_shm::ShmTierConfig::default()
    };
    let below = cascade_shm::ShmTier::open("shm-disk", &config).unwrap();
    demote_and_promote(Arc::new(below), false);
}

/// Device-resident I/O: blocks put from one device buffer and read into another.
#[test]
fn device_pointer_round_trip() {
    let Some(tier) = open_or_skip(&small_config()) else {
        return;
    };
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let blocks: Vec<Vec<u8>> = (0..16).map(|n| random_block(900 + n, 64 << 10)).collect();
    let flat: Vec<u8> = blocks.concat();
    let src = stream.clone_htod(&flat).unwrap();
    let mut dst = stream.alloc_zeros::<u8>(flat.len()).unwrap();
    stream.synchronize().unwrap();
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    let (src_ptr, src_guard) = src.device_ptr(&stream);
    let items: Vec<(BlockId, u64, usize)> = (0..16)
        .map(|n| {
            (
                id(900 + n as u64),
                src_ptr + (n * (64 << 10)) as u64,
                64 << 10,
            )
        })
        .collect();
    // SAFETY: the ranges lie inside `src`, which nothing writes meanwhile.
    for r in unsafe { tier.put_from_device_batch(&items) } {
        r.unwrap();
    }
    drop(src_guard);
    let dst_ptr = {
        let (p, _g) = dst.device_ptr_mut(&stream);
        p
    };
    let reads: Vec<(BlockId, u64, usize)> = (0..16)
        .rev()
        .map(|n| {
            (
                id(900 + n as u64),
                dst_ptr + (n * (64 << 10)) as u64,
                64 << 10,
            )
        })
        .collect();
    // SAFETY: disjoint ranges inside `dst`, owned here.
    for r in unsafe { tier.get_into_device_batch(&reads) } {
        assert_eq!(r.unwrap(), 64 << 10);
    }
    let back = stream.clone_dtoh(&dst).unwrap();
    assert!(back == flat, "device round trip differs");
    // A host address is refused, typed.
    let host = [0u8; 16];
    // SAFETY: the call must refuse the range before touching it.
    let err = unsafe { tier.put_from_device(id(1), host.as_ptr() as u64, 16) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // SAFETY: as above, single form of the read.
    let single = unsafe { tier.get_into_device(id(900), dst_ptr, 64 << 10) }.unwrap();
    assert_eq!(single, 64 << 10);
}

/// Device-resident I/O through the store: `put_device` fills a 4 MiB GPU tier over a
/// shm pool, demoting the oldest blocks into the pool; `get_device` reads every block
/// into device memory, promoting the demoted ones back first; the batch forms agree.
#[test]
fn store_device_io_with_shm_below() {
    use cascade_core::PutOutcome;
    use cascade_core::store::StorePolicy;
    use cudarc::driver::{DevicePtr, DevicePtrMut};

    let config = GpuTierConfig {
        capacity: ByteSize::mib(4),
        ..small_config()
    };
    let Some(gpu) = open_or_skip(&config) else {
        return;
    };
    let (_dir, shm_config) = shm_pool("gpu-store-device.pool");
    let below = Arc::new(cascade_shm::ShmTier::open("shm0", &shm_config).unwrap());
    let store = CascadeStore::new(
        vec![Arc::new(gpu) as Arc<dyn Tier>, below as Arc<dyn Tier>],
        StorePolicy {
            promote_on_read: false,
            ..StorePolicy::default()
        },
    )
    .unwrap();

    let len = 512 << 10;
    let count = 24;
    let blocks: Vec<Vec<u8>> = (0..count)
        .map(|n| random_block(1200 + n as u64, len))
        .collect();
    let flat: Vec<u8> = blocks.concat();
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let src = stream.clone_htod(&flat).unwrap();
    let mut dst = stream.alloc_zeros::<u8>(flat.len()).unwrap();
    stream.synchronize().unwrap();
    let (src_ptr, src_guard) = src.device_ptr(&stream);
    for n in 0..count {
        let at = src_ptr + (n * len) as u64;
        // SAFETY: the range lies inside `src`, which nothing writes meanwhile.
        let outcome = unsafe { store.put_device(id(1200 + n as u64), at, len) }.unwrap();
        assert_eq!(outcome, PutOutcome::Stored);
        assert!(store.tiers()[0].used() <= store.tiers()[0].capacity());
    }
    // SAFETY: as above; a second put of a stored id copies nothing.
    let again = unsafe { store.put_device(id(1200), src_ptr, len) }.unwrap();
    assert_eq!(again, PutOutcome::Deduplicated);
    drop(src_guard);
    let demoted = (0..count)
        .filter(|&n| store.tier_of(id(1200 + n as u64)) == Some(1))
        .count();
    assert!(
        demoted >= 16,
        "a 4 MiB GPU tier holds at most 8 blocks of 512 KiB; {demoted} demoted"
    );
    // A block put from host memory and demoted to shm also reads into device memory.
    assert_eq!(store.tier_of(id(1200)), Some(1));

    let dst_ptr = {
        let (p, _g) = dst.device_ptr_mut(&stream);
        p
    };
    for n in 0..count {
        let at = dst_ptr + (n * len) as u64;
        // SAFETY: disjoint ranges inside `dst`, owned here.
        let got = unsafe { store.get_device(id(1200 + n as u64), at, len) }.unwrap();
        assert_eq!(got, Some(len), "block {n}");
    }
    let back = stream.clone_dtoh(&dst).unwrap();
    assert!(back == flat, "device reads through the store differ");
    let stats = store.stats();
    assert!(stats.promotions >= 16, "{stats:?}");
    assert_eq!(stats.hits, count as u64);
    assert_eq!(stats.dedup_hits, 1);

    // Too small a device output is refused before any copy.
    // SAFETY: the range lies inside `dst`; it is refused before any copy.
    let err = unsafe { store.get_device(id(1200), dst_ptr, len - 1) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    // The batch form: zero the output, read all blocks (many demoted again meanwhile).
    stream.memset_zeros(&mut dst).unwrap();
    stream.synchronize().unwrap();
    let reads: Vec<(BlockId, u64, usize)> = (0..count)
        .map(|n| (id(1200 + n as u64), dst_ptr + (n * len) as u64, len))
        .collect();
    // SAFETY: disjoint ranges inside `dst`, owned here.
    for r in unsafe { store.get_device_batch(&reads) } {
        assert_eq!(r.unwrap(), Some(len));
    }
    let back = stream.clone_dtoh(&dst).unwrap();
    assert!(
        back == flat,
        "batched device reads through the store differ"
    );

    // A host-put block demoted to shm, then read straight into device memory.
    let host_block = random_block(1300, len);
    store.put(id(1300), &host_block).unwrap();
    for n in 0..8 {
        let at = src.device_ptr(&stream).0 + (n * len) as u64;
        store.remove(id(1200 + n as u64)).unwrap();
        // SAFETY: the range lies inside `src`, which nothing writes meanwhile.
        unsafe { store.put_device(id(1200 + n as u64), at, len) }.unwrap();
    }
    assert_eq!(store.tier_of(id(1300)), Some(1), "demoted by newer blocks");
    // SAFETY: the range lies inside `dst`, owned here.
    let got = unsafe { store.get_device(id(1300), dst_ptr, len) }.unwrap();
    assert_eq!(got, Some(len));
    assert_eq!(store.tier_of(id(1300)), Some(0));
    let back = stream.clone_dtoh(&dst).unwrap();
    assert!(back[..len] == host_block[..], "promoted block differs");
}

/// The device's XXH3-64 of a block is the host's `cascade_hash::checksum` of it, for
/// lengths on both sides of XXH3's 1 KiB block and 64-byte stripe bounds, odd ones
/// (the last stripe unaligned), and large blocks; short and unaligned blocks are left
/// to the host.
#[test]
fn checksum_kernel_matches_the_host_checksum() {
    use cascade_gpu::ChecksumKernel;
    use cudarc::driver::DevicePtr;

    if open_or_skip(&small_config()).is_none() {
        return;
    }
    let shared = cascade_gpu::DeviceContext::get(0).unwrap();
    let ctx = shared.context();
    ctx.bind_to_thread().unwrap();
    let kernel = ChecksumKernel::load(ctx).unwrap();
    let lens = [
        241usize,
        255,
        256,
        511,
        1000,
        1023,
        1024,
        1025,
        1087,
        1088,
        2047,
        2048,
        4096,
        4097,
        65_539,
        131_072,
        131_079,
        1 << 20,
        (3 << 20) + 5,
    ];
    // Each block at a 256-byte aligned offset, then one 8-aligned (hashed), one
    // unaligned and one short (both left to the host).
    let mut offsets = Vec::new();
    let mut total = 0usize;
    for &len in &lens {
        offsets.push((total, len));
        total = (total + len).next_multiple_of(256);
    }
    offsets.push((total + 8, 5000));
    offsets.push((total + 8 + 5000 + 3, 5000));
    offsets.push((total + 20_000, 240));
    total += 20_000 + 256;
    let bytes = random_block(4242, total);
    let stream = ctx.default_stream();
    let device = stream.clone_htod(&bytes).unwrap();
    stream.synchronize().unwrap();
    let (base, guard) = device.device_ptr(&stream);
    let blocks: Vec<(u64, usize)> = offsets
        .iter()
        .map(|&(at, len)| (base + at as u64, len))
        .collect();
    // SAFETY: every range lies inside `device`, which nothing writes meanwhile.
    let sums = unsafe { kernel.start(&blocks) }.unwrap().finish().unwrap();
    drop(guard);
    assert_eq!(sums.len(), blocks.len());
    let n = lens.len();
    for (k, &(at, len)) in offsets.iter().enumerate().take(n + 1) {
        let want = cascade_hash::checksum(&bytes[at..at + len]);
        assert_eq!(sums[k], Some(want), "block of {len} bytes at offset {at}");
    }
    assert_eq!(sums[n + 1], None, "an unaligned block is left to the host");
    assert_eq!(sums[n + 2], None, "a short block is left to the host");
    // Many blocks in one launch (more than one CTA's worth).
    let many: Vec<(u64, usize)> = (0..100).map(|k| (base + 4096 * k, 4096)).collect();
    // SAFETY: as above.
    let sums = unsafe { kernel.start(&many) }.unwrap().finish().unwrap();
    for (k, sum) in sums.iter().enumerate() {
        let at = 4096 * k;
        assert_eq!(
            *sum,
            Some(cascade_hash::checksum(&bytes[at..at + 4096])),
            "block {k}"
        );
    }
}

/// Blocks that reach shm from the GPU (demoted out of the GPU tier, and put from device
/// memory into a store whose only tier is shm) carry the checksum the GPU computed: the
/// pool counts them, and a reopen, which verifies every block against its stored
/// checksum, keeps them all with their bytes.
#[test]
fn blocks_from_the_gpu_reach_shm_with_device_checksums_that_verify_on_reopen() {
    use cascade_core::PutOutcome;
    use cudarc::driver::DevicePtr;

    let config = GpuTierConfig {
        capacity: ByteSize::mib(4),
        ..small_config()
    };
    let Some(gpu) = open_or_skip(&config) else {
        return;
    };
    let (dir, shm_config) = shm_pool("gpu-checksums.pool");
    let len = 512 << 10;
    let count = 24usize;
    let blocks: Vec<Vec<u8>> = (0..count)
        .map(|n| random_block(7100 + n as u64, len))
        .collect();
    let flat: Vec<u8> = blocks.concat();
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let src = stream.clone_htod(&flat).unwrap();
    stream.synchronize().unwrap();
    let (src_ptr, src_guard) = src.device_ptr(&stream);
    let sources: Vec<Vec<cascade_core::device::DeviceRegion>> = (0..count)
        .map(|n| {
            // SAFETY: the range lies inside `src`, alive and unwritten for the test.
            vec![unsafe {
                cascade_core::device::DeviceRegion::new(src_ptr + (n * len) as u64, len, 0)
            }]
        })
        .collect();
    // Demotions: 24 blocks of 512 KiB through a 4 MiB GPU tier.
    let from_gpu = {
        let shm = Arc::new(cascade_shm::ShmTier::open("shm0", &shm_config).unwrap());
        let store = CascadeStore::new(
            vec![
                Arc::new(gpu) as Arc<dyn Tier>,
                Arc::clone(&shm) as Arc<dyn Tier>,
            ],
            StorePolicy::default(),
        )
        .unwrap();
        for (n, data) in blocks.iter().enumerate() {
            store.put(id(7100 + n as u64), data).unwrap();
        }
        let demoted = (0..count)
            .filter(|&n| store.tier_of(id(7100 + n as u64)) == Some(1))
            .count();
        assert!(demoted >= 16, "{demoted} demoted");
        assert!(
            shm.checksums_from_fill() as usize >= demoted.saturating_sub(2),
            "{} of {demoted} demoted blocks came with a device checksum",
            shm.checksums_from_fill()
        );
        demoted
    };
    // Device blocks into an shm-only store, one batch: one DMA, hashed on the device.
    let shm_only_config = cascade_shm::ShmTierConfig {
        path: Some(dir.path().join("gpu-checksums-only.pool")),
        ..shm_config.clone()
    };
    {
        let (shm, store) = shm_only_store("shm1", &shm_only_config);
        let batch: Vec<(BlockId, cascade_core::device::Source<'_>)> = (0..count)
            .map(|n| {
                (
                    id(7200 + n as u64),
                    cascade_core::device::Source::Device(&sources[n]),
                )
            })
            .collect();
        for r in store.put_from_batch(&batch) {
            assert_eq!(r.unwrap(), PutOutcome::Stored);
        }
        assert_eq!(shm.checksums_from_fill() as usize, count);
    }
    drop(src_guard);
    let shm = cascade_shm::ShmTier::open("shm0", &shm_config).unwrap();
    assert_eq!(shm.dropped_at_open(), 0, "every device checksum verified");
    assert_eq!(shm.recovered_blocks(), from_gpu);
    let shm_only = cascade_shm::ShmTier::open("shm1", &shm_only_config).unwrap();
    assert_eq!(
        shm_only.dropped_at_open(),
        0,
        "every device checksum verified"
    );
    assert_eq!(shm_only.recovered_blocks(), count);
    for (n, data) in blocks.iter().enumerate() {
        let mut out = vec![0u8; len];
        assert_eq!(shm_only.get(id(7200 + n as u64), &mut out).unwrap(), len);
        assert!(out == *data, "block {n} differs");
        if shm.contains(id(7100 + n as u64)) {
            out.fill(0);
            shm.get(id(7100 + n as u64), &mut out).unwrap();
            assert!(out == *data, "demoted block {n} differs");
        }
    }
}

/// Blocks kept in many small device pieces (layer-major, as an engine's per-layer K and
/// V; one piece of an odd length) go into an shm-only store gathered on the device, with
/// their checksums computed there (a reopen verifies them), and come back scattered over
/// other pieces, byte for byte.
#[test]
fn blocks_in_small_pieces_are_gathered_and_scattered_on_the_device() {
    use cascade_core::PutOutcome;
    use cascade_core::device::{Dest, DeviceRegion, Source};
    use cudarc::driver::{DevicePtr, DevicePtrMut};

    if open_or_skip(&small_config()).is_none() {
        return;
    }
    let (_dir, shm_config) = shm_pool("gpu-pieces.pool");
    let (count, pieces, piece) = (48usize, 32usize, 4096usize);
    // Piece p of block n sits at (p * count + n) * piece; block 3's piece 7 is 4093 bytes.
    let piece_len = |n: usize, p: usize| if (n, p) == (3, 7) { piece - 3 } else { piece };
    let flat = random_block(8800, count * pieces * piece);
    let expected: Vec<Vec<u8>> = (0..count)
        .map(|n| {
            (0..pieces)
                .flat_map(|p| {
                    let at = (p * count + n) * piece;
                    flat[at..at + piece_len(n, p)].to_vec()
                })
                .collect()
        })
        .collect();
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let src = stream.clone_htod(&flat).unwrap();
    let mut dst = stream.alloc_zeros::<u8>(flat.len()).unwrap();
    stream.synchronize().unwrap();
    let (src_ptr, src_guard) = src.device_ptr(&stream);
    let dst_ptr = {
        let (p, _g) = dst.device_ptr_mut(&stream);
        p
    };
    let layout = |base: u64| -> Vec<Vec<DeviceRegion>> {
        (0..count)
            .map(|n| {
                (0..pieces)
                    .map(|p| {
                        let at = base + ((p * count + n) * piece) as u64;
                        // SAFETY: inside `src` / `dst`, alive for the test; nothing
                        // else touches them during a store call.
                        unsafe { DeviceRegion::new(at, piece_len(n, p), 0) }
                    })
                    .collect()
            })
            .collect()
    };
    let (put_regions, get_regions) = (layout(src_ptr), layout(dst_ptr));
    {
        let (shm, store) = shm_only_store("shm0", &shm_config);
        let batch: Vec<(BlockId, Source<'_>)> = (0..count)
            .map(|n| (id(8800 + n as u64), Source::Device(&put_regions[n])))
            .collect();
        for r in store.put_from_batch(&batch) {
            assert_eq!(r.unwrap(), PutOutcome::Stored);
        }
        assert_eq!(
            shm.checksums_from_fill() as usize,
            count,
            "every gathered block hashed on the device"
        );
        let mut reads: Vec<(BlockId, Dest<'_>)> = (0..count)
            .map(|n| (id(8800 + n as u64), Dest::Device(&get_regions[n])))
            .collect();
        for (n, r) in store.get_into_batch(&mut reads).into_iter().enumerate() {
            assert_eq!(r.unwrap(), Some(expected[n].len()));
        }
    }
    drop(src_guard);
    let back = stream.clone_dtoh(&dst).unwrap();
    stream.synchronize().unwrap();
    for n in 0..count {
        for p in 0..pieces {
            let at = (p * count + n) * piece;
            let len = piece_len(n, p);
            assert!(
                back[at..at + len] == flat[at..at + len],
                "block {n}, piece {p} differs after the round trip"
            );
        }
    }
    let shm = cascade_shm::ShmTier::open("shm0", &shm_config).unwrap();
    assert_eq!(shm.dropped_at_open(), 0, "every device checksum verified");
    assert_eq!(shm.recovered_blocks(), count);
    for (n, want) in expected.iter().enumerate() {
        let mut out = vec![0u8; want.len()];
        shm.get(id(8800 + n as u64), &mut out).unwrap();
        assert!(out == *want, "block {n} stored wrong");
    }
}
