//! The store's device-memory path (`put_device` / `get_device` and their batches) over a
//! fake device tier: a memory tier that says it holds device memory and treats device
//! addresses as host pointers. This checks the store's logic (placement, dedup,
//! promotion from a host tier below, demotion, errors, stats) on a machine with no GPU;
//! cascade-gpu's tests run the same calls on a real GPU tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::config::ByteSize;
use cascade_core::store::StorePolicy;
use cascade_core::tier::{Capability, HostRegion};
use cascade_core::{
    BlockId, CascadeStore, ErrorKind, MemoryTier, MemoryTierConfig, PutOutcome, Result, Tier,
};

/// A memory tier posing as device memory. `device_puts` / `device_gets` count the calls
/// that went through the device path, so tests can tell it from the host path.
struct FakeDevice {
    inner: MemoryTier,
    device_puts: AtomicU64,
    device_gets: AtomicU64,
    /// Calls of `put_batch` (host bytes in, one batched copy on a real GPU tier).
    host_batches: AtomicU64,
}

impl FakeDevice {
    fn new(name: &str, capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: memory_tier(name, capacity),
            device_puts: AtomicU64::new(0),
            device_gets: AtomicU64::new(0),
            host_batches: AtomicU64::new(0),
        })
    }
}

impl Tier for FakeDevice {
    fn kind(&self) -> &str {
        "fake-device"
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capability(&self) -> Capability {
        Capability {
            device_memory: true,
            device: Some(0),
            ..self.inner.capability()
        }
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
    fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<()>> {
        self.host_batches.fetch_add(1, Ordering::Relaxed);
        // One by one: the store may call this under its block locks (as a GPU tier's
        // batched DMA is), where the default's rayon fan-out must not run.
        items
            .iter()
            .map(|(id, data)| self.inner.put(*id, data))
            .collect()
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
        None
    }
    unsafe fn put_from_device(&self, id: BlockId, src: u64, len: usize) -> Result<()> {
        self.device_puts.fetch_add(1, Ordering::Relaxed);
        // SAFETY: in these tests a "device address" is a host pointer to `len` bytes.
        let data = unsafe { std::slice::from_raw_parts(src as *const u8, len) };
        self.inner.put(id, data)
    }
    unsafe fn get_into_device(&self, id: BlockId, dst: u64, capacity: usize) -> Result<usize> {
        self.device_gets.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above, `capacity` writable bytes that nothing else touches.
        let out = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, capacity) };
        self.inner.get(id, out)
    }
}

fn memory_tier(name: &str, capacity: u64) -> MemoryTier {
    let config = MemoryTierConfig {
        capacity: ByteSize(capacity),
        prefault: false,
    };
    MemoryTier::open(name, &config).expect("memory tier")
}

fn memory(name: &str, capacity: u64) -> Arc<dyn Tier> {
    Arc::new(memory_tier(name, capacity))
}

fn no_promotion() -> StorePolicy {
    StorePolicy {
        promote_on_read: false,
        ..StorePolicy::default()
    }
}

/// A store over a fake device tier of `device` bytes and a memory tier of `host` bytes.
fn device_over_memory(
    device: u64,
    host: u64,
    policy: StorePolicy,
) -> (CascadeStore, Arc<FakeDevice>) {
    let gpu = FakeDevice::new("gpu", device);
    let tiers: Vec<Arc<dyn Tier>> = vec![gpu.clone(), memory("host", host)];
    (CascadeStore::new(tiers, policy).expect("store"), gpu)
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) << 21 | 0xD0D)
}

fn block(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed * 7919) as u8 ^ (seed as u8))
        .collect()
}

fn put_device(store: &CascadeStore, id: BlockId, data: &[u8]) -> Result<PutOutcome> {
    // SAFETY: the fake device tier reads `data.len()` bytes from this host pointer.
    unsafe { store.put_device(id, data.as_ptr() as u64, data.len()) }
}

fn get_device(store: &CascadeStore, id: BlockId, out: &mut [u8]) -> Result<Option<usize>> {
    // SAFETY: the fake device tier writes at most `out.len()` bytes to this host pointer.
    unsafe { store.get_device(id, out.as_mut_ptr() as u64, out.len()) }
}

/// Every indexed block is in exactly the tier the store reports, and no tier is over
/// capacity or holds a block the index lacks.
fn assert_consistent(store: &CascadeStore) {
    let mut held = 0;
    for (position, tier) in store.tiers().iter().enumerate() {
        assert!(
            tier.used() <= tier.capacity(),
            "{} over capacity",
            tier.name()
        );
        for (id, _) in tier.ids() {
            held += 1;
            assert_eq!(store.tier_of(id), Some(position), "{id} misplaced");
        }
    }
    assert_eq!(held, store.ids().len(), "index and tiers disagree");
}

#[test]
fn a_store_without_device_access_or_tier_refuses_device_memory() {
    // No DeviceAccess (core alone, as without the `gpu` feature) and no device tier:
    // host tiers cannot reach device memory, a typed Unavailable error.
    let store = CascadeStore::new(
        vec![memory("m0", 1 << 20), memory("m1", 1 << 20)],
        StorePolicy::default(),
    )
    .expect("store");
    let data = block(1, 4096);
    let err = put_device(&store, id(1), &data).expect_err("no device access");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("no GPU support"), "{err}");
    assert!(!store.contains(id(1)));
    let mut out = vec![0u8; 4096];
    assert_eq!(
        get_device(&store, id(1), &mut out).expect("an absent block is a miss"),
        None
    );

    store.put(id(1), &data).expect("host put");
    let err = get_device(&store, id(1), &mut out).expect_err("no device access");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(out.iter().all(|&b| b == 0), "nothing copied");
    assert_eq!(store.tier_of(id(1)), Some(0), "block left where it was");

    // SAFETY: the addresses are never dereferenced: host tiers refuse device memory.
    let err =
        unsafe { store.tiers()[0].put_from_device(id(2), 0x1000, 16) }.expect_err("host tier");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    // SAFETY: the address is a host buffer of its length, never read (no device tier).
    let results = unsafe { store.put_device_batch(&[(id(3), data.as_ptr() as u64, data.len())]) };
    assert_eq!(
        results[0].as_ref().expect_err("no device access").kind(),
        ErrorKind::Unavailable
    );
}

#[test]
fn device_round_trip_lands_in_the_device_tier_and_counts() {
    let (store, gpu) = device_over_memory(1 << 20, 1 << 20, StorePolicy::default());
    let data = block(7, 10_000);
    assert_eq!(
        put_device(&store, id(7), &data).expect("put"),
        PutOutcome::Stored
    );
    assert_eq!(store.tier_of(id(7)), Some(0));
    assert_eq!(gpu.device_puts.load(Ordering::Relaxed), 1);

    let mut out = vec![0xEEu8; 12_000];
    assert_eq!(
        get_device(&store, id(7), &mut out).expect("get"),
        Some(10_000)
    );
    assert_eq!(&out[..10_000], &data[..]);
    assert!(
        out[10_000..].iter().all(|&b| b == 0xEE),
        "bytes past the block untouched"
    );
    assert_eq!(gpu.device_gets.load(Ordering::Relaxed), 1);

    // The host path reads the same block.
    let mut host = vec![0u8; 10_000];
    assert_eq!(store.get(id(7), &mut host).expect("get"), Some(10_000));
    assert_eq!(host, data);

    assert_eq!(get_device(&store, id(8), &mut out).expect("miss"), None);
    let stats = store.stats();
    assert_eq!(stats.puts, 1);
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.tiers[0].blocks, 1);
    assert_consistent(&store);
}

#[test]
fn device_puts_dedup_like_host_puts() {
    let (store, gpu) = device_over_memory(1 << 20, 1 << 20, StorePolicy::default());
    let data = block(3, 4096);
    put_device(&store, id(3), &data).expect("put");
    let other = block(4, 4096);
    assert_eq!(
        put_device(&store, id(3), &other).expect("put"),
        PutOutcome::Deduplicated
    );
    assert_eq!(
        store.put(id(3), &other).expect("put"),
        PutOutcome::Deduplicated
    );
    assert_eq!(
        gpu.device_puts.load(Ordering::Relaxed),
        1,
        "a dedup hit copies nothing"
    );
    let stats = store.stats();
    assert_eq!(stats.dedup_hits, 2);
    assert_eq!(stats.dedup_bytes_saved, 8192);
    assert_eq!(stats.puts, 1);
    let mut out = vec![0u8; 4096];
    get_device(&store, id(3), &mut out).expect("get");
    assert_eq!(out, data, "the first bytes stay");

    // With dedup off a device put replaces the block, also one held by a host tier.
    let (store, _) = device_over_memory(
        1 << 20,
        1 << 20,
        StorePolicy {
            dedup: false,
            ..StorePolicy::default()
        },
    );
    store.put(id(3), &data).expect("put");
    put_device(&store, id(3), &other).expect("replace");
    get_device(&store, id(3), &mut out).expect("get");
    assert_eq!(out, other);
    assert_eq!(store.stats().blocks, 1);
    assert_consistent(&store);
}

#[test]
fn a_full_device_tier_demotes_and_device_reads_promote_back() {
    let len = 64 * 1024;
    let (store, gpu) = device_over_memory(4 * len as u64, 64 * len as u64, no_promotion());
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..12).map(|n| (id(n), block(n, len))).collect();
    for (id, data) in &blocks {
        assert_eq!(
            put_device(&store, *id, data).expect("put"),
            PutOutcome::Stored
        );
        assert_consistent(&store);
    }
    let stats = store.stats();
    assert_eq!(stats.blocks, 12);
    assert_eq!(stats.evictions, 0);
    assert_eq!(stats.tiers[0].blocks, 4);
    assert!(stats.tiers[0].demotions >= 8, "{stats:?}");
    assert_eq!(store.tier_of(id(0)), Some(1), "the oldest went down");

    // A device read of a demoted block promotes it into the device tier first, even
    // with promote_on_read off (device memory can only be served from there).
    let mut out = vec![0u8; len];
    let gets_before = gpu.device_gets.load(Ordering::Relaxed);
    assert_eq!(get_device(&store, id(0), &mut out).expect("get"), Some(len));
    assert_eq!(out, blocks[0].1);
    assert_eq!(store.tier_of(id(0)), Some(0));
    assert_eq!(gpu.device_gets.load(Ordering::Relaxed), gets_before + 1);
    let stats = store.stats();
    assert_eq!(stats.tiers[0].promotions, 1);
    assert_eq!(
        stats.tiers[1].hits, 1,
        "the hit is counted where the block was found"
    );
    assert_eq!(stats.hits, 1);
    assert_eq!(
        stats.tiers[0].blocks, 4,
        "room was made by demoting another block"
    );
    assert_consistent(&store);

    // Every block still reads back, through either path.
    for (n, (id, data)) in blocks.iter().enumerate() {
        out.fill(0);
        let found = if n % 2 == 0 {
            get_device(&store, *id, &mut out)
        } else {
            store.get(*id, &mut out)
        };
        assert_eq!(found.expect("get"), Some(len), "{id}");
        assert_eq!(&out, data, "{id}");
        assert_consistent(&store);
    }
}

#[test]
fn too_small_outputs_and_unpromotable_blocks_are_typed_errors() {
    let (store, gpu) = device_over_memory(64 * 1024, 1 << 20, StorePolicy::default());
    let data = block(5, 8192);
    put_device(&store, id(5), &data).expect("put");
    let mut small = vec![0xAAu8; 8191];
    let err = get_device(&store, id(5), &mut small).expect_err("too small");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(small.iter().all(|&b| b == 0xAA), "nothing copied");
    assert_eq!(gpu.device_gets.load(Ordering::Relaxed), 0);

    // Larger than the device tier can ever hold: without device access the host tier
    // cannot take it from device memory, and a host block of that size cannot be
    // promoted for a device read; it stays readable on the host.
    let big = block(6, 128 * 1024);
    let err = put_device(&store, id(6), &big).expect_err("too large for the device tier");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    store.put(id(6), &big).expect("host put");
    assert_eq!(store.tier_of(id(6)), Some(1));
    let mut out = vec![0u8; big.len()];
    let err = get_device(&store, id(6), &mut out).expect_err("cannot promote");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(store.tier_of(id(6)), Some(1));
    assert_eq!(
        store.get(id(6), &mut out).expect("host get"),
        Some(big.len())
    );
    assert_eq!(out, big);
    assert_consistent(&store);
}

#[test]
fn device_batches_mix_resident_demoted_missing_and_bad_items() {
    let len = 16 * 1024;
    let (store, gpu) = device_over_memory(8 * len as u64, 64 * len as u64, no_promotion());
    let blocks: Vec<Vec<u8>> = (0..6).map(|n| block(100 + n, len)).collect();
    let items: Vec<(BlockId, u64, usize)> = blocks
        .iter()
        .enumerate()
        .map(|(n, b)| (id(100 + n as u64), b.as_ptr() as u64, b.len()))
        .collect();
    // SAFETY: each address is a host buffer of its length, alive for the call.
    let results = unsafe { store.put_device_batch(&items) };
    assert!(
        results.iter().all(|r| matches!(r, Ok(PutOutcome::Stored))),
        "{results:?}"
    );
    assert_eq!(gpu.device_puts.load(Ordering::Relaxed), 6);
    // A second batch dedups.
    // SAFETY: as above.
    let again = unsafe { store.put_device_batch(&items[..2]) };
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Ok(PutOutcome::Deduplicated)))
    );

    // One block in the host tier, read back through the device batch.
    let host_block = block(200, len);
    store.remove(id(105)).expect("remove");
    store.put(id(105), &host_block).expect("host put");
    assert_eq!(store.tier_of(id(105)), Some(0));
    // Push it down: fill the device tier with newer blocks.
    let filler: Vec<Vec<u8>> = (0..8).map(|n| block(300 + n, len)).collect();
    for (n, f) in filler.iter().enumerate() {
        put_device(&store, id(300 + n as u64), f).expect("filler");
    }
    assert_eq!(store.tier_of(id(105)), Some(1));

    let mut outs: Vec<Vec<u8>> = vec![vec![0u8; len]; 4];
    outs.push(vec![0u8; len - 1]);
    let wanted = [id(300), id(307), id(105), id(999), id(301)];
    let out_items: Vec<(BlockId, u64, usize)> = wanted
        .iter()
        .zip(outs.iter_mut())
        .map(|(id, out)| (*id, out.as_mut_ptr() as u64, out.len()))
        .collect();
    // SAFETY: each address is a distinct host buffer of its capacity.
    let results = unsafe { store.get_device_batch(&out_items) };
    assert_eq!(*results[0].as_ref().expect("resident"), Some(len));
    assert_eq!(outs[0], filler[0]);
    assert_eq!(*results[1].as_ref().expect("resident"), Some(len));
    assert_eq!(outs[1], filler[7]);
    assert_eq!(*results[2].as_ref().expect("promoted"), Some(len));
    assert_eq!(outs[2], host_block);
    assert_eq!(store.tier_of(id(105)), Some(0));
    assert_eq!(*results[3].as_ref().expect("missing"), None);
    assert_eq!(
        results[4].as_ref().expect_err("too small").kind(),
        ErrorKind::InvalidInput
    );
    let stats = store.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.tiers[0].promotions, 1);
    assert_consistent(&store);
}

#[test]
fn batch_reads_promote_into_the_device_tier_in_one_batched_put() {
    let len = 32 * 1024;
    let policy = StorePolicy {
        promote_on_read: true,
        ..StorePolicy::default()
    };
    let (store, gpu) = device_over_memory(8 * len as u64, 64 * len as u64, policy);
    let blocks: Vec<Vec<u8>> = (0..16).map(|n| block(n, len)).collect();
    for (n, data) in blocks.iter().enumerate() {
        put_device(&store, id(n as u64), data).expect("put");
    }
    assert_eq!(store.tier_of(id(0)), Some(1), "the oldest went down");
    // Blocks 0..8 are in the host tier: one batch read of three of them into host
    // buffers brings them up with one batched put; single device reads of the next
    // three promote them too.
    let mut host_outs: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; len]).collect();
    let mut device_outs: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; len]).collect();
    let batches = gpu.host_batches.load(Ordering::Relaxed);
    {
        let mut reads: Vec<(BlockId, &mut [u8])> = host_outs
            .iter_mut()
            .enumerate()
            .map(|(n, o)| (id(n as u64), o.as_mut_slice()))
            .collect();
        for r in store.get_batch(&mut reads) {
            assert_eq!(r.expect("get"), Some(len));
        }
    }
    assert_eq!(gpu.host_batches.load(Ordering::Relaxed) - batches, 1);
    for n in 0..3 {
        assert_eq!(host_outs[n], blocks[n], "block {n}");
        assert_eq!(store.tier_of(id(n as u64)), Some(0), "block {n} promoted");
    }
    assert_eq!(store.stats().tiers[0].promotions, 3);
    assert_consistent(&store);
    for (k, out) in device_outs.iter_mut().enumerate() {
        let n = 3 + k as u64;
        assert_eq!(get_device(&store, id(n), out).expect("get"), Some(len));
        assert_eq!(out, &blocks[n as usize], "block {n}");
        assert_eq!(store.tier_of(id(n)), Some(0));
    }
    assert_eq!(
        store.stats().blocks,
        16,
        "room made by demoting, nothing lost"
    );
    assert_consistent(&store);
}

#[test]
fn a_large_demotion_out_of_device_memory_moves_every_block_intact() {
    // 48 MiB out of the device tier at once: the move runs on several threads (one
    // batch each) where the machine has the cores.
    let len = 1 << 20;
    let (store, _gpu) = device_over_memory(48 * len as u64, 96 * len as u64, no_promotion());
    let blocks: Vec<Vec<u8>> = (0..48).map(|n| block(n, len)).collect();
    for (n, data) in blocks.iter().enumerate() {
        put_device(&store, id(n as u64), data).expect("put");
    }
    assert_eq!(store.stats().tiers[0].blocks, 48);
    let freed = store.free_up(0, 48 * len as u64).expect("free_up");
    assert_eq!(freed, 48 * len as u64);
    let stats = store.stats();
    assert_eq!((stats.tiers[0].blocks, stats.tiers[1].blocks), (0, 48));
    assert_eq!(stats.tiers[0].demotions, 48);
    let mut out = vec![0u8; len];
    for (n, data) in blocks.iter().enumerate() {
        assert_eq!(store.tier_of(id(n as u64)), Some(1));
        assert_eq!(store.get(id(n as u64), &mut out).expect("get"), Some(len));
        assert_eq!(&out, data, "block {n}");
    }
    assert_consistent(&store);
}

#[test]
fn a_large_batch_read_promotes_every_block_intact() {
    let len = 1 << 20;
    let policy = StorePolicy {
        promote_on_read: true,
        ..StorePolicy::default()
    };
    let (store, gpu) = device_over_memory(48 * len as u64, 96 * len as u64, policy);
    let blocks: Vec<Vec<u8>> = (0..48).map(|n| block(n + 100, len)).collect();
    for (n, data) in blocks.iter().enumerate() {
        put_device(&store, id(n as u64), data).expect("put");
    }
    store.free_up(0, 48 * len as u64).expect("free_up");
    assert_eq!(store.stats().tiers[1].blocks, 48);
    let mut outs: Vec<Vec<u8>> = (0..48).map(|_| vec![0u8; len]).collect();
    let batches = gpu.host_batches.load(Ordering::Relaxed);
    {
        let mut reads: Vec<(BlockId, &mut [u8])> = outs
            .iter_mut()
            .enumerate()
            .map(|(n, o)| (id(n as u64), o.as_mut_slice()))
            .collect();
        for r in store.get_batch(&mut reads) {
            assert_eq!(r.expect("get"), Some(len));
        }
    }
    let calls = gpu.host_batches.load(Ordering::Relaxed) - batches;
    assert!(
        (1..=8).contains(&calls),
        "{calls} batched puts for one promotion"
    );
    let stats = store.stats();
    assert_eq!(stats.tiers[0].promotions, 48);
    assert_eq!((stats.tiers[0].blocks, stats.tiers[1].blocks), (48, 0));
    let mut out = vec![0u8; len];
    for (n, data) in blocks.iter().enumerate() {
        assert_eq!(&outs[n], data, "block {n} read");
        assert_eq!(
            get_device(&store, id(n as u64), &mut out).expect("get"),
            Some(len)
        );
        assert_eq!(&out, data, "block {n} promoted");
    }
    assert_consistent(&store);
}
