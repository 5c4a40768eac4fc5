//! Prefetch: blocks moved into a faster tier in the background come back with the bytes
//! that were stored, count against capacity, can be cancelled without leaving a partial
//! block, settle missing and failing blocks with typed outcomes, and run from many
//! threads at once. Asynchronous batch gets return what synchronous ones do, stop
//! between chunks when cancelled, and run from many threads beside prefetches.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::store::StorePolicy;
use cascade_core::tier::BatchFill;
use cascade_core::{
    BlockId, Capability, CascadeStore, Error, ErrorKind, MemoryTier, MemoryTierConfig,
    PrefetchTarget, Prefetched, Result, Tier,
};

const BLOCK: usize = 32 * 1024;

/// A memory tier that can be made slow, count its reads, fail reads of chosen blocks as
/// corrupt (dropping them, as real tiers do) and refuse writes as a full disk would.
struct Faulty {
    inner: MemoryTier,
    read_delay: Mutex<Duration>,
    reads: AtomicUsize,
    reading: AtomicBool,
    corrupt: Mutex<HashSet<BlockId>>,
    no_space: AtomicBool,
}

impl Faulty {
    fn new(name: &str, capacity: u64) -> Arc<Self> {
        let config = MemoryTierConfig {
            capacity: ByteSize(capacity),
            prefault: false,
        };
        Arc::new(Self {
            inner: MemoryTier::open(name, &config).expect("memory tier"),
            read_delay: Mutex::new(Duration::ZERO),
            reads: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            corrupt: Mutex::new(HashSet::new()),
            no_space: AtomicBool::new(false),
        })
    }

    fn slow(&self, per_read: Duration) {
        *self.read_delay.lock().expect("lock") = per_read;
    }

    fn read_one(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        self.reading.store(true, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = *self.read_delay.lock().expect("lock");
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.corrupt.lock().expect("lock").remove(&id) {
            self.inner.remove(id)?;
            return Err(Error::new(ErrorKind::Corrupt, "checksum mismatch").with_context("id", id));
        }
        self.inner.get(id, out)
    }

    fn full_disk(&self) -> Error {
        Error::new(ErrorKind::Io, "No space left on device (os error 28)")
            .with_context("tier", self.inner.name())
    }
}

impl Tier for Faulty {
    fn kind(&self) -> &str {
        "faulty"
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capability(&self) -> Capability {
        self.inner.capability()
    }
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn used(&self) -> u64 {
        self.inner.used()
    }
    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        if self.no_space.load(Ordering::SeqCst) {
            return Err(self.full_disk());
        }
        self.inner.put(id, data)
    }
    fn put_with_batch(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut BatchFill<'_>,
    ) -> Vec<Result<()>> {
        if self.no_space.load(Ordering::SeqCst) {
            return items.iter().map(|_| Err(self.full_disk())).collect();
        }
        self.inner.put_with_batch(items, fill)
    }
    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        self.read_one(id, out)
    }
    fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<usize>> {
        items
            .iter_mut()
            .map(|(id, out)| self.read_one(*id, out))
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
}

fn policy(max_prefetches: usize) -> StorePolicy {
    StorePolicy {
        promote_on_read: false,
        max_prefetches,
        ..StorePolicy::default()
    }
}

/// A fast tier of `fast_blocks` blocks over a slow one of 256 blocks.
fn two_tiers(
    fast_blocks: usize,
    max_prefetches: usize,
) -> (CascadeStore, Arc<Faulty>, Arc<Faulty>) {
    let fast = Faulty::new("fast", (fast_blocks * BLOCK) as u64);
    let slow = Faulty::new("slow", (256 * BLOCK) as u64);
    let tiers: Vec<Arc<dyn Tier>> = vec![fast.clone(), slow.clone()];
    let store = CascadeStore::new(tiers, policy(max_prefetches)).expect("store");
    (store, fast, slow)
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) << 20 | 0x5EED)
}

/// Stores `count` blocks and moves them all into the slowest tier.
fn stored_below(store: &CascadeStore, count: u64) -> HashMap<BlockId, Vec<u8>> {
    let mut blocks = HashMap::new();
    for n in 0..count {
        let data = random_block(n, BLOCK);
        store.put(id(n), &data).expect("put");
        blocks.insert(id(n), data);
    }
    let last = store.tiers().len() - 1;
    for tier in 0..last {
        store
            .free_up(tier, store.tiers()[tier].capacity())
            .expect("free up");
    }
    for n in 0..count {
        assert_eq!(store.tier_of(id(n)), Some(last), "block {n} not moved down");
    }
    blocks
}

fn read(store: &CascadeStore, id: BlockId) -> Option<Vec<u8>> {
    let mut out = vec![0u8; BLOCK];
    let n = store.get(id, &mut out).expect("get")?;
    out.truncate(n);
    Some(out)
}

/// Every indexed block is in exactly the tier the store reports, whole, and no tier
/// holds a block the store does not know (no partial or orphaned copy).
fn assert_consistent(store: &CascadeStore, blocks: &HashMap<BlockId, Vec<u8>>) {
    let mut held: HashMap<BlockId, Vec<usize>> = HashMap::new();
    for (position, tier) in store.tiers().iter().enumerate() {
        assert!(
            tier.used() <= tier.capacity(),
            "{} over capacity",
            tier.name()
        );
        for (id, len) in tier.ids() {
            assert_eq!(
                len,
                BLOCK as u64,
                "{id} has a partial copy in {}",
                tier.name()
            );
            held.entry(id).or_default().push(position);
        }
    }
    let ids = store.ids();
    assert_eq!(ids.len(), held.len(), "index and tiers disagree");
    for id in ids {
        let tiers = held.get(&id).cloned().unwrap_or_default();
        assert_eq!(tiers.len(), 1, "{id} is in tiers {tiers:?}");
        assert_eq!(Some(tiers[0]), store.tier_of(id));
        assert_eq!(read(store, id).as_ref(), blocks.get(&id), "bytes of {id}");
    }
}

#[test]
fn prefetched_blocks_move_up_and_read_back_the_bytes_stored() {
    let (store, _fast, _slow) = two_tiers(64, 2);
    let blocks = stored_below(&store, 32);
    let ids: Vec<BlockId> = (0..32).map(id).collect();
    let handle = store.prefetch(&ids).expect("prefetch");
    let outcomes = handle.wait();
    assert!(handle.is_done());
    assert_eq!(handle.ready(), 32);
    for (n, outcome) in outcomes.iter().enumerate() {
        assert_eq!(
            outcome.as_ref().ok(),
            Some(&Prefetched::Moved { tier: 0 }),
            "block {n}"
        );
        assert_eq!(store.tier_of(id(n as u64)), Some(0));
    }
    assert_eq!(store.stats().prefetched, 32);

    // A batch get returns what a synchronous get of the same blocks would.
    let mut outs: Vec<Vec<u8>> = vec![vec![0u8; BLOCK]; 32];
    let mut items: Vec<(BlockId, &mut [u8])> = ids
        .iter()
        .zip(outs.iter_mut())
        .map(|(id, o)| (*id, o.as_mut_slice()))
        .collect();
    let got = store.get_batch(&mut items);
    for ((id, out), got) in ids.iter().zip(&outs).zip(got) {
        assert_eq!(got.expect("get"), Some(BLOCK));
        assert_eq!(out, &blocks[id]);
    }
    let stats = store.stats();
    assert_eq!(stats.prefetch_hits, 32);
    assert_eq!(stats.tiers[0].hits, 32);
    assert_eq!(stats.prefetch_wasted, 0);
    // Only the first read of a prefetched block is a prefetch hit.
    read(&store, ids[0]);
    assert_eq!(store.stats().prefetch_hits, 32);
    assert_consistent(&store, &blocks);
}

#[test]
fn missing_ids_are_counted_missing_and_resident_blocks_stay() {
    let (store, _fast, _slow) = two_tiers(64, 1);
    let blocks = stored_below(&store, 2);
    store.put(id(50), &random_block(50, BLOCK)).expect("put");
    let asked = [id(0), id(99), id(1), id(50), id(0)];
    let handle = store.prefetch(&asked).expect("prefetch");
    let outcomes: Vec<Prefetched> = handle
        .wait()
        .into_iter()
        .map(|o| o.expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        [
            Prefetched::Moved { tier: 0 },
            Prefetched::Missing,
            Prefetched::Moved { tier: 0 },
            Prefetched::Resident { tier: 0 },
            Prefetched::Moved { tier: 0 },
        ]
    );
    let progress = handle.progress();
    assert_eq!(
        (progress.ready, progress.missing, progress.pending),
        (4, 1, 0)
    );
    // A prefetch is no get: its missing ids are not get misses.
    assert_eq!(store.stats().misses, 0);
    assert_eq!(store.stats().prefetched, 2);
    let mut all = blocks;
    all.insert(id(50), random_block(50, BLOCK));
    assert_consistent(&store, &all);

    let empty = store.prefetch(&[]).expect("empty prefetch");
    assert!(empty.is_done() && empty.is_empty());
}

#[test]
fn a_named_tier_is_the_target_and_an_unknown_one_is_refused() {
    let tiers: Vec<Arc<dyn Tier>> = vec![
        Faulty::new("t0", 64 * BLOCK as u64),
        Faulty::new("t1", 64 * BLOCK as u64),
        Faulty::new("t2", 64 * BLOCK as u64),
    ];
    let store = CascadeStore::new(tiers, policy(2)).expect("store");
    let blocks = stored_below(&store, 8);
    let ids: Vec<BlockId> = (0..8).map(id).collect();
    let outcomes = store
        .prefetch_to(&ids, PrefetchTarget::Tier(1))
        .expect("prefetch")
        .wait();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Prefetched::Moved { tier: 1 })))
    );
    assert!(ids.iter().all(|id| store.tier_of(*id) == Some(1)));
    // Already faster than the target: stays.
    let again = store
        .prefetch_to(&ids, PrefetchTarget::Tier(2))
        .expect("prefetch")
        .wait();
    assert!(
        again
            .iter()
            .all(|o| matches!(o, Ok(Prefetched::Resident { tier: 1 })))
    );
    assert_consistent(&store, &blocks);

    let err = store
        .prefetch_to(&ids, PrefetchTarget::Tier(3))
        .expect_err("no tier 3");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn prefetched_blocks_count_against_capacity_and_unread_ones_are_wasted_when_pushed_out() {
    let (store, fast, _slow) = two_tiers(8, 1);
    let blocks = stored_below(&store, 24);
    let ids: Vec<BlockId> = (0..24).map(id).collect();
    let outcomes = store.prefetch(&ids).expect("prefetch").wait();
    assert!(
        outcomes
            .iter()
            .all(|o| o.as_ref().is_ok_and(Prefetched::is_ready)),
        "{outcomes:?}"
    );
    assert!(fast.used() <= fast.capacity());
    let stats = store.stats();
    assert_eq!(stats.prefetched, 24);
    // Eight fit; the earlier sixteen were demoted (unread) to make room.
    assert_eq!(stats.tiers[0].blocks, 8);
    assert_eq!(stats.prefetch_wasted, 16);
    for n in 16..24 {
        assert_eq!(store.tier_of(id(n)), Some(0), "the last prefetched stay");
    }
    assert_consistent(&store, &blocks);
}

#[test]
fn a_get_of_a_block_being_prefetched_waits_for_it_instead_of_reading_it_twice() {
    let (store, _fast, slow) = two_tiers(64, 1);
    let blocks = stored_below(&store, 1);
    slow.slow(Duration::from_millis(300));
    slow.reads.store(0, Ordering::SeqCst);
    slow.reading.store(false, Ordering::SeqCst);
    let handle = store.prefetch(&[id(0)]).expect("prefetch");
    let started = Instant::now();
    while !slow.reading.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the prefetch never read"
        );
        std::thread::yield_now();
    }
    assert_eq!(read(&store, id(0)).as_ref(), blocks.get(&id(0)));
    assert_eq!(
        slow.reads.load(Ordering::SeqCst),
        1,
        "the slow tier was read twice"
    );
    assert_eq!(
        store.tier_of(id(0)),
        Some(0),
        "the get returned before the move"
    );
    assert!(matches!(
        handle.wait()[0],
        Ok(Prefetched::Moved { tier: 0 })
    ));
    assert_eq!(store.stats().prefetch_hits, 1);
}

#[test]
fn cancelling_mid_flight_leaves_every_block_whole_in_one_tier() {
    let (store, fast, slow) = two_tiers(256, 1);
    let blocks = stored_below(&store, 200);
    // One block per 5 ms: a chunk of 64 takes about 0.3 s.
    slow.slow(Duration::from_millis(5));
    let ids: Vec<BlockId> = (0..200).map(id).collect();
    let handle = store.prefetch(&ids).expect("prefetch");
    let started = Instant::now();
    while handle.ready() == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "nothing moved");
        std::thread::sleep(Duration::from_millis(1));
    }
    handle.cancel();
    let outcomes = handle.wait();
    let moved = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Prefetched::Moved { .. })))
        .count();
    let cancelled = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Prefetched::Cancelled)))
        .count();
    assert_eq!(moved + cancelled, 200, "{outcomes:?}");
    assert!(
        moved >= 1 && cancelled >= 1,
        "moved {moved}, cancelled {cancelled}"
    );
    assert_eq!(store.stats().prefetched, moved as u64);
    assert_eq!(fast.inner.ids().len(), moved);
    for (n, outcome) in outcomes.iter().enumerate() {
        let want = if matches!(outcome, Ok(Prefetched::Moved { .. })) {
            0
        } else {
            1
        };
        assert_eq!(store.tier_of(id(n as u64)), Some(want), "block {n}");
    }
    slow.slow(Duration::ZERO);
    assert_consistent(&store, &blocks);
}

#[test]
fn a_dropped_handle_frees_its_place_for_the_next_prefetch() {
    let (store, _fast, slow) = two_tiers(256, 1);
    let _blocks = stored_below(&store, 201);
    slow.slow(Duration::from_millis(5));
    let slow_ids: Vec<BlockId> = (0..200).map(id).collect();
    drop(store.prefetch(&slow_ids).expect("prefetch"));
    // With one prefetch at a time, this one runs only once the dropped one stopped.
    let next = store.prefetch(&[id(200)]).expect("prefetch");
    assert!(
        next.wait_timeout(Duration::from_secs(20)),
        "the dropped prefetch kept its place"
    );
    assert!(matches!(next.wait()[0], Ok(Prefetched::Moved { tier: 0 })));
    assert!(
        store.stats().prefetched < 100,
        "the dropped prefetch ran on: {}",
        store.stats().prefetched
    );

    // A detached one runs to its end.
    slow.slow(Duration::ZERO);
    store.prefetch(&slow_ids).expect("prefetch").detach();
    let started = Instant::now();
    while slow_ids.iter().any(|id| store.tier_of(*id) != Some(0)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the detached prefetch stopped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_corrupt_block_ends_with_a_typed_error_and_the_others_move() {
    let (store, _fast, slow) = two_tiers(64, 1);
    let mut blocks = stored_below(&store, 4);
    slow.corrupt.lock().expect("lock").insert(id(2));
    let ids: Vec<BlockId> = (0..4).map(id).collect();
    let outcomes = store.prefetch(&ids).expect("prefetch").wait();
    for (n, outcome) in outcomes.iter().enumerate() {
        match (n, outcome) {
            (2, Err(e)) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
            (_, Ok(Prefetched::Moved { tier: 0 })) if n != 2 => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    // Dropped as a get drops a damaged block: never served.
    assert!(!store.contains(id(2)));
    assert_eq!(store.stats().tiers[1].corrupt, 1);
    blocks.remove(&id(2));
    assert_consistent(&store, &blocks);
}

#[test]
fn a_full_disk_in_the_target_ends_each_block_with_an_io_error_and_they_stay_readable() {
    let (store, fast, _slow) = two_tiers(64, 1);
    let blocks = stored_below(&store, 6);
    fast.no_space.store(true, Ordering::SeqCst);
    let ids: Vec<BlockId> = (0..6).map(id).collect();
    let handle = store.prefetch(&ids).expect("prefetch");
    for outcome in handle.wait() {
        assert_eq!(outcome.expect_err("full disk").kind(), ErrorKind::Io);
    }
    assert_eq!(handle.progress().failed, 6);
    assert_eq!(fast.used(), 0);
    assert_eq!(store.stats().prefetched, 0);
    assert!(ids.iter().all(|id| store.tier_of(*id) == Some(1)));
    assert_consistent(&store, &blocks);
}

#[test]
fn a_prefix_prefetch_takes_the_stored_leading_keys() {
    let (store, _fast, _slow) = two_tiers(64, 1);
    let blocks = stored_below(&store, 5);
    store.remove(id(3)).expect("remove");
    let keys: Vec<BlockId> = (0..5).map(id).collect();
    let handle = store.prefetch_prefix(&keys).expect("prefetch");
    assert_eq!(handle.len(), 3);
    assert_eq!(handle.ids(), &keys[..3]);
    assert!(
        handle
            .wait()
            .iter()
            .all(|o| matches!(o, Ok(Prefetched::Moved { tier: 0 })))
    );
    assert_eq!(
        store.tier_of(id(4)),
        Some(1),
        "a key after the gap is not prefetched"
    );
    let mut left = blocks;
    left.remove(&id(3));
    assert_consistent(&store, &left);
}

struct Flag(AtomicBool, std::thread::Thread);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
        self.1.unpark();
    }
}

#[test]
fn the_handle_is_a_future_woken_by_the_prefetch() {
    let (store, _fast, slow) = two_tiers(64, 1);
    let _blocks = stored_below(&store, 16);
    slow.slow(Duration::from_millis(2));
    let ids: Vec<BlockId> = (0..16).map(id).collect();
    let mut handle = std::pin::pin!(store.prefetch(&ids).expect("prefetch"));
    let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let started = Instant::now();
    let outcomes = loop {
        if let Poll::Ready(outcomes) = handle.as_mut().poll(&mut cx) {
            break outcomes;
        }
        // Parked until the waker runs (or spuriously); a lost wake-up times out.
        std::thread::park_timeout(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30), "never woken");
    };
    assert_eq!(outcomes.len(), 16);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Prefetched::Moved { tier: 0 })))
    );
    assert!(
        flag.0.load(Ordering::SeqCst),
        "completed without waking the waker"
    );
}

#[test]
fn many_prefetches_from_many_threads_with_gets_and_puts_keep_the_store_consistent() {
    let (store, _fast, _slow) = two_tiers(48, 3);
    let store = Arc::new(store);
    let blocks = stored_below(&store, 128);
    let blocks = Arc::new(blocks);
    let moved = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let store = Arc::clone(&store);
            let blocks = Arc::clone(&blocks);
            let moved = Arc::clone(&moved);
            std::thread::spawn(move || {
                let mut handles = Vec::new();
                let mut added = Vec::new();
                for round in 0..8u64 {
                    let ids: Vec<BlockId> = (0..16)
                        .map(|k| id((t * 37 + round * 11 + k * 5) % 128))
                        .collect();
                    let unique: Vec<BlockId> = {
                        let mut seen = HashSet::new();
                        ids.into_iter().filter(|id| seen.insert(*id)).collect()
                    };
                    handles.push(store.prefetch(&unique).expect("prefetch"));
                    for id in unique.iter().step_by(3) {
                        assert_eq!(read(&store, *id).as_ref(), blocks.get(id), "bytes of {id}");
                    }
                    let n = 1000 + t * 100 + round;
                    let data = random_block(n, BLOCK);
                    store.put(id(n), &data).expect("put");
                    added.push((id(n), data));
                }
                for handle in handles {
                    for outcome in handle.wait() {
                        match outcome.expect("prefetch outcome") {
                            Prefetched::Moved { .. } => {
                                moved.fetch_add(1, Ordering::SeqCst);
                            }
                            Prefetched::Resident { .. } => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                added
            })
        })
        .collect();
    let mut all = (*blocks).clone();
    for thread in threads {
        all.extend(thread.join().expect("thread"));
    }
    let stats = store.stats();
    assert_eq!(stats.prefetched, moved.load(Ordering::SeqCst) as u64);
    assert!(stats.prefetched > 0);
    assert!(stats.prefetch_hits + stats.prefetch_wasted <= stats.prefetched);
    assert_consistent(&store, &all);
}

// Asynchronous batch gets.

fn buffers(count: usize, len: usize) -> Vec<(BlockId, Vec<u8>)> {
    (0..count)
        .map(|n| (id(n as u64), vec![0xEEu8; len]))
        .collect()
}

#[test]
fn an_async_batch_get_returns_what_the_synchronous_one_does() {
    let (store, _fast, _slow) = two_tiers(16, 1);
    let store = Arc::new(store);
    let blocks = stored_below(&store, 24);
    // Some blocks in the fast tier, some below, one missing, one buffer too small.
    for n in 0..6 {
        read(&store, id(n));
        store
            .put(id(100 + n), &random_block(100 + n, BLOCK))
            .expect("put");
    }
    let mut asked: Vec<(BlockId, Vec<u8>)> =
        (0..24).map(|n| (id(n), vec![0xEEu8; BLOCK])).collect();
    asked.extend((100..106).map(|n| (id(n), vec![0xEEu8; BLOCK])));
    asked.push((id(999), vec![0xEEu8; BLOCK]));
    asked.push((id(7), vec![0xEEu8; BLOCK / 2]));
    let mut sync_bufs = asked.clone();

    let handle = store.get_batch_async(asked);
    let output = handle.wait();
    let mut sync_items: Vec<(BlockId, &mut [u8])> = sync_bufs
        .iter_mut()
        .map(|(id, b)| (*id, b.as_mut_slice()))
        .collect();
    let sync_results = store.get_batch(&mut sync_items);

    assert_eq!(output.items.len(), sync_bufs.len());
    for (k, ((got, want), (async_res, sync_res))) in output
        .items
        .iter()
        .zip(&sync_bufs)
        .zip(output.results.iter().zip(&sync_results))
        .enumerate()
    {
        assert_eq!(got.0, want.0, "item {k} order");
        assert_eq!(got.1, want.1, "item {k} bytes");
        match (async_res, sync_res) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "item {k}"),
            (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "item {k}"),
            other => panic!("item {k} differs: {other:?}"),
        }
    }
    assert_eq!(
        output.results[24 + 6].as_ref().ok(),
        Some(&None),
        "missing id"
    );
    assert_eq!(
        output.results[24 + 7].as_ref().err().map(Error::kind),
        Some(ErrorKind::InvalidInput)
    );
    for (n, (id, buf)) in output.items.iter().take(24).enumerate() {
        assert_eq!(buf, &blocks[id], "block {n}");
    }
}

#[test]
fn an_async_batch_get_can_be_polled_awaited_and_waited_with_a_timeout() {
    let (store, _fast, slow) = two_tiers(64, 1);
    let store = Arc::new(store);
    let blocks = stored_below(&store, 8);
    slow.slow(Duration::from_millis(20));
    let handle = store.get_batch_async(buffers(8, BLOCK));
    assert!(handle.wait_timeout(Duration::from_secs(30)));
    let output = handle.try_wait().expect("done");
    assert!(handle.try_wait().is_none(), "the output is taken once");
    assert!(output.results.iter().all(|r| matches!(r, Ok(Some(BLOCK)))));
    for (id, buf) in &output.items {
        assert_eq!(buf, &blocks[id]);
    }

    // As a future, woken by the reading thread.
    let mut future = std::pin::pin!(store.get_batch_async(buffers(8, BLOCK)));
    let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let started = Instant::now();
    let output = loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            break output;
        }
        std::thread::park_timeout(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30), "never woken");
    };
    assert_eq!(output.items.len(), 8);
    assert!(output.results.iter().all(|r| matches!(r, Ok(Some(BLOCK)))));
}

#[test]
fn cancelling_an_async_batch_get_stops_it_between_chunks() {
    let (store, _fast, slow) = two_tiers(8, 1);
    let store = Arc::new(store);
    let blocks = stored_below(&store, 200);
    // Each block read takes 2 ms, so a chunk of 256 takes about half a second.
    slow.slow(Duration::from_millis(2));
    slow.reading.store(false, Ordering::SeqCst);
    let mut asked = buffers(200, BLOCK);
    asked.extend(buffers(200, BLOCK));
    asked.extend(buffers(200, BLOCK));
    let handle = store.get_batch_async(asked);
    let started = Instant::now();
    while !slow.reading.load(Ordering::SeqCst) {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        std::thread::yield_now();
    }
    handle.cancel();
    let output = handle.wait();
    let read_ok = output
        .results
        .iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    let cancelled: Vec<usize> = (0..600)
        .filter(|&k| {
            output.results[k]
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::Unavailable)
        })
        .collect();
    assert_eq!(read_ok + cancelled.len(), 600, "{:?}", output.results);
    assert!((256..600).contains(&read_ok), "read {read_ok}");
    for (k, (id, buf)) in output.items.iter().enumerate() {
        if cancelled.contains(&k) {
            assert!(
                buf.iter().all(|&b| b == 0xEE),
                "cancelled buffer {k} was written"
            );
        } else {
            assert_eq!(buf, &blocks[id], "buffer {k}");
        }
    }
}

#[test]
fn async_batch_gets_from_many_threads_read_their_blocks_while_prefetches_move_them() {
    let (store, _fast, _slow) = two_tiers(32, 2);
    let store = Arc::new(store);
    let blocks = Arc::new(stored_below(&store, 96));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            let blocks = Arc::clone(&blocks);
            std::thread::spawn(move || {
                let mut prefetches = Vec::new();
                for round in 0..10u64 {
                    let ids: Vec<BlockId> = (0..12)
                        .map(|k| id((t * 29 + round * 7 + k * 3) % 96))
                        .collect();
                    let prefetch = store.prefetch(&ids[6..]).expect("prefetch");
                    let items = ids.iter().map(|id| (*id, vec![0u8; BLOCK])).collect();
                    let output = store.get_batch_async(items).wait();
                    for ((id, buf), result) in output.items.iter().zip(&output.results) {
                        assert_eq!(result.as_ref().ok(), Some(&Some(BLOCK)), "{id}");
                        assert_eq!(buf, &blocks[id], "bytes of {id}");
                    }
                    prefetches.push(prefetch);
                }
                // Checked once every move is done: a block being moved is briefly in
                // two tiers (copied, then repointed, then removed from the old one).
                for prefetch in prefetches {
                    assert!(
                        prefetch
                            .wait()
                            .iter()
                            .all(|o| o.as_ref().is_ok_and(Prefetched::is_ready))
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_consistent(&store, &blocks);
}
