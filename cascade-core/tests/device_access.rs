//! Device memory into host tiers through a [`DeviceAccess`], whole and in pieces, single
//! and batched. The copier here is host memcpy standing in for DMA (the "device"
//! addresses are host buffers), so what is checked is the store's side: which bytes go
//! where, one batched copy per batch, placement, stats. cascade-gpu's tests run the same
//! paths against a real GPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cascade_core::config::ByteSize;
use cascade_core::device::{
    Dest, DeviceAccess, DeviceCopier, DeviceRegion, HostDeviceCopy, Source,
};
use cascade_core::store::StorePolicy;
use cascade_core::tier::HostRegion;
use cascade_core::{
    BlockId, CascadeStore, ErrorKind, MemoryTier, MemoryTierConfig, PutOutcome, Result, Tier,
};

#[derive(Default)]
struct Memcpy {
    calls: AtomicUsize,
    copies: AtomicUsize,
    regions: AtomicUsize,
}

impl DeviceCopier for Memcpy {
    fn device(&self) -> usize {
        0
    }
    unsafe fn to_host(&self, copies: &[HostDeviceCopy]) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.copies.fetch_add(copies.len(), Ordering::Relaxed);
        for c in copies {
            // SAFETY: in this test the "device" addresses are live host buffers of the
            // given lengths, and the host side is the tier's room for the block.
            unsafe {
                std::ptr::copy_nonoverlapping(c.device as *const u8, c.host as *mut u8, c.len)
            };
        }
        Ok(())
    }
    /// "Hashes on the device": answers [`device_checksum`] of the bytes that landed in
    /// each block's host range.
    unsafe fn to_host_hashed(
        &self,
        copies: &[HostDeviceCopy],
        blocks: &[(usize, usize)],
    ) -> Result<Vec<Option<u64>>> {
        // SAFETY: the caller's contract is to_host's.
        unsafe { self.to_host(copies) }?;
        Ok(blocks
            .iter()
            .map(|&(host, len)| {
                // SAFETY: the host range was just filled by the copies above and is the
                // tier's room for the block, which nothing else touches meanwhile.
                let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len) };
                Some(device_checksum(bytes))
            })
            .collect())
    }
    unsafe fn to_device(&self, copies: &[HostDeviceCopy]) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.copies.fetch_add(copies.len(), Ordering::Relaxed);
        for c in copies {
            // SAFETY: as above, the other way round.
            unsafe {
                std::ptr::copy_nonoverlapping(c.host as *const u8, c.device as *mut u8, c.len)
            };
        }
        Ok(())
    }
}

/// The stand-in copier's "checksum" of a block's bytes (not XXH3: the tier below stores
/// whatever it is handed).
fn device_checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

struct Access(Arc<Memcpy>);

impl DeviceAccess for Access {
    fn copier(&self, device: usize, regions: &[HostRegion]) -> Result<Arc<dyn DeviceCopier>> {
        assert_eq!(device, 3, "the regions' device is the one asked for");
        self.0.regions.store(regions.len(), Ordering::Relaxed);
        Ok(Arc::clone(&self.0) as Arc<dyn DeviceCopier>)
    }
}

fn memory(name: &str, capacity: u64) -> Arc<dyn Tier> {
    let config = MemoryTierConfig {
        capacity: ByteSize(capacity),
        prefault: false,
    };
    Arc::new(MemoryTier::open(name, &config).expect("memory tier"))
}

fn store(copier: &Arc<Memcpy>, capacities: &[u64]) -> CascadeStore {
    let tiers = capacities
        .iter()
        .enumerate()
        .map(|(i, &c)| memory(&format!("m{i}"), c))
        .collect();
    let policy = StorePolicy {
        promote_on_read: false,
        ..StorePolicy::default()
    };
    CascadeStore::new(tiers, policy)
        .expect("store")
        .with_device_access(Arc::new(Access(Arc::clone(copier))))
}

fn block(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 131 + seed * 7) as u8)
        .collect()
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(0xD0_0000 + u128::from(n))
}

/// `pieces` regions over `buf`, as an engine's per-layer tensors would be.
fn regions(buf: &[u8], pieces: usize) -> Vec<DeviceRegion> {
    let step = buf.len().div_ceil(pieces);
    buf.chunks(step)
        // SAFETY: the "device" memory of this test is the host buffer `buf`, which
        // outlives every store call the regions are passed to.
        .map(|c| unsafe { DeviceRegion::new(c.as_ptr() as u64, c.len(), 3) })
        .collect()
}

#[test]
fn device_blocks_go_into_host_tiers_whole_and_in_pieces_and_come_back() {
    let copier = Arc::new(Memcpy::default());
    let store = store(&copier, &[1 << 20, 1 << 20]);
    let data = block(1, 40_000);
    let whole = regions(&data, 1);
    assert_eq!(
        store.put_from(id(1), Source::Device(&whole)).expect("put"),
        PutOutcome::Stored
    );
    assert_eq!(
        copier.regions.load(Ordering::Relaxed),
        2,
        "both host tiers' memory registered"
    );
    let gathered = regions(&data, 32);
    store
        .put_from(id(2), Source::Device(&gathered))
        .expect("put pieces");
    assert_eq!(store.tier_of(id(2)), Some(0));

    // Read back scattered over 32 device pieces and whole, and into host pieces.
    let mut out = vec![0u8; data.len()];
    let scattered = regions(&out, 32);
    assert_eq!(
        store
            .get_into(id(1), Dest::Device(&scattered))
            .expect("get"),
        Some(data.len())
    );
    assert_eq!(out, data);
    out.fill(0);
    let one = regions(&out, 1);
    assert_eq!(
        store.get_into(id(2), Dest::Device(&one)).expect("get"),
        Some(data.len())
    );
    assert_eq!(out, data);
    let (mut a, mut b) = (vec![0u8; 1000], vec![0u8; 39_000]);
    let mut host_pieces: Vec<&mut [u8]> = vec![&mut a, &mut b];
    assert_eq!(
        store
            .get_into(id(2), Dest::HostPieces(&mut host_pieces))
            .expect("get"),
        Some(data.len())
    );
    assert_eq!([a, b].concat(), data);
    let (first, rest) = data.split_at(123);
    store
        .put_from(id(3), Source::HostPieces(&[first, rest]))
        .expect("host pieces");
    let mut host = vec![0u8; data.len()];
    assert_eq!(store.get(id(3), &mut host).expect("get"), Some(data.len()));
    assert_eq!(host, data);

    // Too small a destination copies nothing.
    let mut small = vec![0xAAu8; 100];
    let small_regions = regions(&small, 2);
    let err = store
        .get_into(id(1), Dest::Device(&small_regions))
        .expect_err("too small");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(small.iter_mut().all(|b| *b == 0xAA));
    let stats = store.stats();
    assert_eq!((stats.puts, stats.hits), (3, 4));
}

#[test]
fn device_batches_fill_a_host_tier_in_one_copy_each_way_and_spill_below() {
    let copier = Arc::new(Memcpy::default());
    // The first tier takes 16 of the 24 blocks; the rest spill into the second.
    let store = store(&copier, &[16 * 8192, 1 << 20]);
    let blocks: Vec<Vec<u8>> = (0..24).map(|n| block(n, 8192)).collect();
    let pieces: Vec<Vec<DeviceRegion>> = blocks.iter().map(|b| regions(b, 4)).collect();
    let first: Vec<(BlockId, Source<'_>)> = (0..16)
        .map(|n| (id(n as u64), Source::Device(&pieces[n])))
        .collect();
    let calls = copier.calls.load(Ordering::Relaxed);
    for r in store.put_from_batch(&first) {
        assert_eq!(r.expect("batch put"), PutOutcome::Stored);
    }
    assert_eq!(
        copier.calls.load(Ordering::Relaxed) - calls,
        1,
        "one batched copy for the batch"
    );
    assert_eq!(
        copier.copies.load(Ordering::Relaxed),
        64,
        "four pieces per block"
    );
    let rest: Vec<(BlockId, Source<'_>)> = (16..24)
        .map(|n| (id(n as u64), Source::Device(&pieces[n])))
        .collect();
    for r in store.put_from_batch(&rest) {
        assert_eq!(r.expect("batch put"), PutOutcome::Stored);
    }
    assert!(
        store.stats().tiers[0].demotions >= 8,
        "room made by demoting"
    );
    assert_eq!(store.stats().blocks, 24);

    let mut outs: Vec<Vec<u8>> = (0..24).map(|_| vec![0u8; 8192]).collect();
    let out_regions: Vec<Vec<DeviceRegion>> = outs.iter().map(|o| regions(o, 4)).collect();
    let mut reads: Vec<(BlockId, Dest<'_>)> = (0..24)
        .map(|n| (id(n as u64), Dest::Device(&out_regions[n])))
        .collect();
    reads.push((id(99), Dest::Device(&[])));
    let calls = copier.calls.load(Ordering::Relaxed);
    let results = store.get_into_batch(&mut reads);
    assert_eq!(
        copier.calls.load(Ordering::Relaxed) - calls,
        2,
        "one copy per tier read"
    );
    drop(reads);
    for (n, r) in results.iter().take(24).enumerate() {
        assert_eq!(*r.as_ref().expect("batch get"), Some(8192));
        assert_eq!(outs[n], blocks[n], "block {n}");
    }
    assert_eq!(*results[24].as_ref().expect("miss"), None);
    outs.clear();
}

#[test]
fn device_batch_reads_promote_blocks_found_below_in_one_batch() {
    let copier = Arc::new(Memcpy::default());
    let tiers = vec![memory("m0", 16 * 8192), memory("m1", 1 << 20)];
    let policy = StorePolicy {
        promote_on_read: true,
        ..StorePolicy::default()
    };
    let store = CascadeStore::new(tiers, policy)
        .expect("store")
        .with_device_access(Arc::new(Access(Arc::clone(&copier))));
    let blocks: Vec<Vec<u8>> = (0..24).map(|n| block(n, 8192)).collect();
    for (n, b) in blocks.iter().enumerate() {
        store.put(id(n as u64), b).expect("put");
    }
    // 0..8 were demoted to make room for 16..24.
    assert_eq!(store.tier_of(id(0)), Some(1));
    assert_eq!(store.tier_of(id(8)), Some(0));
    let mut outs: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; 8192]).collect();
    let out_regions: Vec<Vec<DeviceRegion>> = outs.iter().map(|o| regions(o, 4)).collect();
    let results = {
        let mut reads: Vec<(BlockId, Dest<'_>)> = (0..8)
            .map(|n| (id(n as u64), Dest::Device(&out_regions[n])))
            .collect();
        store.get_into_batch(&mut reads)
    };
    drop(out_regions);
    for (n, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("batch get"), Some(8192));
        assert_eq!(outs[n], blocks[n], "block {n}");
        assert_eq!(store.tier_of(id(n as u64)), Some(0), "block {n} promoted");
    }
    let stats = store.stats();
    assert_eq!(stats.tiers[0].promotions, 8);
    assert_eq!(
        stats.tiers[0].blocks, 16,
        "the top tier stays within capacity"
    );
    assert_eq!(stats.blocks, 24);
    outs.clear();
    for (n, b) in blocks.iter().enumerate() {
        let mut out = vec![0u8; 8192];
        assert_eq!(store.get(id(n as u64), &mut out).expect("get"), Some(8192));
        assert_eq!(&out, b, "block {n}");
    }
}

#[test]
fn batches_of_blocks_in_many_pieces_laid_out_layer_major_round_trip() {
    // As an engine keeps its KV: piece p of every block in one run (layer p), 32 pieces
    // a block, so each batch is thousands of small copies.
    let copier = Arc::new(Memcpy::default());
    let (count, pieces, piece) = (256usize, 32usize, 512usize);
    let block = pieces * piece;
    let store = store(&copier, &[(count * block) as u64 * 2]);
    let source: Vec<u8> = (0..count * block)
        .map(|i| (i * 7 + i / 4093) as u8)
        .collect();
    let layout = |base: *const u8| -> Vec<Vec<DeviceRegion>> {
        (0..count)
            .map(|n| {
                (0..pieces)
                    .map(|p| {
                        let at = (p * count * piece + n * piece) as u64;
                        // SAFETY: the "device" memory is the host buffer at `base`
                        // (count * block bytes), alive for every call the regions go to.
                        unsafe { DeviceRegion::new(base as u64 + at, piece, 3) }
                    })
                    .collect()
            })
            .collect()
    };
    let src = layout(source.as_ptr());
    for (k, chunk) in src.chunks(64).enumerate() {
        let batch: Vec<(BlockId, Source<'_>)> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| (id((k * 64 + i) as u64), Source::Device(r)))
            .collect();
        for r in store.put_from_batch(&batch) {
            assert_eq!(r.expect("put"), PutOutcome::Stored);
        }
    }
    // Each block is its pieces in order.
    let mut one = vec![0u8; block];
    for n in [0usize, 1, 100, 255] {
        assert_eq!(store.get(id(n as u64), &mut one).expect("get"), Some(block));
        for p in 0..pieces {
            let at = p * count * piece + n * piece;
            assert_eq!(&one[p * piece..(p + 1) * piece], &source[at..at + piece]);
        }
    }
    let mut out = vec![0u8; count * block];
    let dst = layout(out.as_mut_ptr());
    for (k, chunk) in dst.chunks(64).enumerate() {
        let mut batch: Vec<(BlockId, Dest<'_>)> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| (id((k * 64 + i) as u64), Dest::Device(r)))
            .collect();
        for r in store.get_into_batch(&mut batch) {
            assert_eq!(r.expect("get"), Some(block));
        }
    }
    drop(dst);
    assert!(out == source, "scattered back into the same layout");
}

/// A memory tier that records the checksums its batch fills hand it.
struct Recording {
    inner: Arc<dyn Tier>,
    handed: std::sync::Mutex<Vec<(BlockId, Option<u64>)>>,
}

impl Tier for Recording {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capability(&self) -> cascade_core::Capability {
        self.inner.capability()
    }
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn used(&self) -> u64 {
        self.inner.used()
    }
    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        self.inner.put(id, data)
    }
    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        self.inner.get(id, out)
    }
    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.inner.len_of(id)
    }
    fn remove(&self, id: BlockId) -> Result<bool> {
        self.inner.remove(id)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn clear(&self) -> Result<()> {
        self.inner.clear()
    }
    fn ids(&self) -> Vec<(BlockId, u64)> {
        self.inner.ids()
    }
    fn host_region(&self) -> Option<HostRegion> {
        self.inner.host_region()
    }
    fn put_with_batch_checked(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut cascade_core::tier::CheckedFill<'_>,
    ) -> Vec<Result<()>> {
        self.inner.put_with_batch(items, &mut |targets| {
            let filled = fill(targets);
            let mut handed = self.handed.lock().expect("lock");
            for ((i, _), outcome) in targets.iter().zip(&filled) {
                handed.push((items[*i].0, *outcome.as_ref().expect("fill")));
            }
            filled
                .into_iter()
                .map(|outcome| outcome.map(|_| ()))
                .collect()
        })
    }
}

/// A batch of device blocks into a host tier takes the copier's device-side checksum
/// of each device block, whole or gathered from pieces, to the tier with its bytes;
/// host blocks go without one (the tier hashes them).
#[test]
fn device_checksums_reach_the_host_tier_with_device_blocks_only() {
    let copier = Arc::new(Memcpy::default());
    let recording = Arc::new(Recording {
        inner: memory("m0", 1 << 20),
        handed: std::sync::Mutex::new(Vec::new()),
    });
    let store = CascadeStore::new(
        vec![Arc::clone(&recording) as Arc<dyn Tier>],
        StorePolicy::default(),
    )
    .expect("store")
    .with_device_access(Arc::new(Access(Arc::clone(&copier))));
    let blocks: Vec<Vec<u8>> = (0..6).map(|n| block(n, 8192)).collect();
    let whole: Vec<Vec<DeviceRegion>> = blocks.iter().map(|b| regions(b, 1)).collect();
    let pieces: Vec<Vec<DeviceRegion>> = blocks.iter().map(|b| regions(b, 4)).collect();
    let batch: Vec<(BlockId, Source<'_>)> = (0..6)
        .map(|n| {
            let source = match n % 3 {
                0 => Source::Device(&whole[n]),
                1 => Source::Device(&pieces[n]),
                _ => Source::Host(&blocks[n]),
            };
            (id(n as u64), source)
        })
        .collect();
    for r in store.put_from_batch(&batch) {
        assert_eq!(r.expect("batch put"), PutOutcome::Stored);
    }
    let mut handed = recording.handed.lock().expect("lock").clone();
    handed.sort_by_key(|(id, _)| *id);
    let expected: Vec<(BlockId, Option<u64>)> = (0..6)
        .map(|n| {
            let checksum = (n % 3 != 2).then(|| device_checksum(&blocks[n]));
            (id(n as u64), checksum)
        })
        .collect();
    assert_eq!(handed, expected);
    for (n, data) in blocks.iter().enumerate() {
        let mut out = vec![0u8; data.len()];
        assert_eq!(store.get(id(n as u64), &mut out).expect("get"), Some(8192));
        assert_eq!(&out, data, "block {n}");
    }
}
