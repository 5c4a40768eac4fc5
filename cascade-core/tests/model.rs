//! Model-based test of the store: long random sequences of put, get, remove, clear,
//! flush, reopen and batch calls (whole host buffers, and host pieces gathered on put
//! and scattered on get) over two or three small tiers, against a plain map.
//!
//! After every step: the bytes of every block equal the model's; each block is in
//! exactly one tier (plus, under write-through, its copy in the persistent tier), the
//! one the store reports; no tier is over capacity; a block missing from the store was
//! evicted, and counted as such; and the stats agree with what the calls returned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cascade_core::config::{ByteSize, WritePolicy};
use cascade_core::device::{Dest, Source};
use cascade_core::store::StorePolicy;
use cascade_core::tier::{BatchFill, Capability};
use cascade_core::{
    BlockId, CascadeStore, ErrorKind, MemoryTier, MemoryTierConfig, PutOutcome, Result, Tier,
};
use proptest::prelude::*;

/// A memory tier that says it is persistent: the test keeps the tier objects across a
/// reopen, so their contents survive it as a persistent tier's would.
struct Held {
    inner: MemoryTier,
    persistent: bool,
    /// Calls of `put_with_batch`: how many batches moved blocks in.
    batches: AtomicUsize,
}

impl Held {
    fn new(name: String, capacity: u64, persistent: bool) -> Self {
        let config = MemoryTierConfig {
            capacity: ByteSize(capacity),
            prefault: false,
        };
        Self {
            inner: MemoryTier::open(name, &config).expect("memory tier"),
            persistent,
            batches: AtomicUsize::new(0),
        }
    }
}

impl Tier for Held {
    fn kind(&self) -> &str {
        "held"
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capability(&self) -> Capability {
        Capability {
            persistent: self.persistent,
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
    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.inner.len_of(id)
    }
    fn remove(&self, id: BlockId) -> Result<bool> {
        self.inner.remove(id)
    }
    fn put_with(
        &self,
        id: BlockId,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        self.inner.put_with(id, len, fill)
    }
    fn get_with(&self, id: BlockId, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.inner.get_with(id, visit)
    }
    fn put_with_batch(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut BatchFill<'_>,
    ) -> Vec<Result<()>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.inner.put_with_batch(items, fill)
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

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize, u8),
    Get(u8),
    Remove(u8),
    Clear,
    Flush,
    Reopen,
    PutBatch(Vec<(u8, usize, u8)>),
    GetBatch(Vec<u8>),
    /// A batch put of blocks gathered from host pieces.
    PutPieces(Vec<(u8, usize, u8)>),
    /// A batch get scattering blocks into host pieces.
    GetPieces(Vec<u8>),
}

/// How many pieces a block is cut into (the last may be short or empty).
const PIECES: usize = 3;

const IDS: u8 = 20;
const MAX_LEN: usize = 6000;

fn op() -> impl Strategy<Value = Op> {
    let item = (0..IDS, 1..MAX_LEN, any::<u8>());
    prop_oneof![
        8 => item.clone().prop_map(|(i, l, s)| Op::Put(i, l, s)),
        6 => (0..IDS).prop_map(Op::Get),
        2 => (0..IDS).prop_map(Op::Remove),
        1 => Just(Op::Clear),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        3 => proptest::collection::vec(item.clone(), 1..12).prop_map(Op::PutBatch),
        3 => proptest::collection::vec(0..IDS, 1..12).prop_map(Op::GetBatch),
        2 => proptest::collection::vec(item, 1..12).prop_map(Op::PutPieces),
        2 => proptest::collection::vec(0..IDS, 1..12).prop_map(Op::GetPieces),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    capacities: Vec<u64>,
    dedup: bool,
    promote: bool,
    write_through: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::collection::vec(8u64..40, 2..=3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(kib, dedup, promote, write_through)| Setup {
            capacities: kib.into_iter().map(|k| k * 1024).collect(),
            dedup,
            promote,
            write_through,
        })
}

fn id(n: u8) -> BlockId {
    BlockId::from_u128((u128::from(n) << 64) | 0x5EED)
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// What the calls returned since the store opened, for the stats check.
#[derive(Debug, Default)]
struct Expected {
    puts: u64,
    dedup_hits: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
    /// Puts in the current step that replaced a stored block: a put may evict the old
    /// copy of its own id while making room, so that eviction loses nothing.
    replaced: u64,
}

struct Harness {
    setup: Setup,
    tiers: Vec<Arc<dyn Tier>>,
    store: Option<CascadeStore>,
    model: HashMap<u8, Vec<u8>>,
    expected: Expected,
}

impl Harness {
    fn new(setup: Setup) -> Self {
        let last = setup.capacities.len() - 1;
        let tiers: Vec<Arc<dyn Tier>> = setup
            .capacities
            .iter()
            .enumerate()
            .map(|(i, &cap)| {
                // Write-through needs a persistent tier to write to: the last one.
                Arc::new(Held::new(format!("t{i}"), cap, i == last)) as Arc<dyn Tier>
            })
            .collect();
        let mut harness = Self {
            setup,
            tiers,
            store: None,
            model: HashMap::new(),
            expected: Expected::default(),
        };
        harness.open();
        harness
    }

    fn policy(&self) -> StorePolicy {
        StorePolicy {
            dedup: self.setup.dedup,
            promote_on_read: self.setup.promote,
            num_io_threads: 2,
            write_policy: if self.setup.write_through {
                WritePolicy::WriteThrough
            } else {
                WritePolicy::WriteBack
            },
            ..StorePolicy::default()
        }
    }

    fn open(&mut self) {
        self.store = None;
        let store = CascadeStore::new(self.tiers.clone(), self.policy()).expect("store");
        self.store = Some(store);
        self.expected = Expected::default();
    }

    fn store(&self) -> &CascadeStore {
        self.store.as_ref().expect("open store")
    }

    fn largest(&self) -> u64 {
        self.setup.capacities.iter().copied().max().unwrap_or(0)
    }

    /// Checks a put's outcome against the model and applies it.
    fn put_outcome(&mut self, n: u8, data: Vec<u8>, outcome: Result<PutOutcome>) {
        let had = self.model.contains_key(&n);
        match outcome {
            Ok(PutOutcome::Deduplicated) => {
                assert!(self.setup.dedup && had, "dedup hit for a block not stored");
                self.expected.dedup_hits += 1;
            }
            Ok(PutOutcome::Stored) => {
                assert!(!(self.setup.dedup && had), "stored again with dedup on");
                self.expected.puts += 1;
                self.expected.replaced += u64::from(had);
                self.model.insert(n, data);
            }
            Err(e) if e.kind() == ErrorKind::TooLarge => {
                assert!(data.len() as u64 > self.largest(), "{e}");
            }
            // Fragmentation can leave no extent long enough although bytes are free.
            Err(e) if e.kind() == ErrorKind::TierFull => {}
            Err(e) => panic!("put failed: {e}"),
        }
    }

    fn get_outcome(&mut self, n: u8, out: &[u8], outcome: Result<Option<usize>>) {
        match (outcome.expect("get"), self.model.get(&n)) {
            (Some(len), Some(want)) => {
                assert_eq!(&out[..len], want.as_slice(), "wrong bytes for block {n}");
                self.expected.hits += 1;
            }
            (None, None) => self.expected.misses += 1,
            (got, want) => panic!(
                "block {n}: store read {got:?}, model has {:?}",
                want.map(Vec::len)
            ),
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Put(n, len, seed) => {
                let data = bytes(*len, *seed);
                let outcome = self.store().put(id(*n), &data);
                self.put_outcome(*n, data, outcome);
            }
            Op::Get(n) => {
                let mut out = vec![0u8; MAX_LEN];
                let outcome = self.store().get(id(*n), &mut out);
                self.get_outcome(*n, &out, outcome);
            }
            Op::Remove(n) => {
                let removed = self.store().remove(id(*n)).expect("remove");
                assert_eq!(removed, self.model.remove(n).is_some(), "remove of {n}");
            }
            Op::Clear => {
                self.store().clear().expect("clear");
                self.model.clear();
            }
            Op::Flush => self.flush(),
            Op::Reopen => self.open(),
            Op::PutBatch(items) => {
                let items = unique(items, |(n, _, _)| *n);
                let data: Vec<Vec<u8>> = items.iter().map(|&(_, l, s)| bytes(l, s)).collect();
                let batch: Vec<(BlockId, &[u8])> = items
                    .iter()
                    .zip(&data)
                    .map(|(&(n, _, _), d)| (id(n), d.as_slice()))
                    .collect();
                let outcomes = self.store().put_batch(&batch);
                assert_eq!(outcomes.len(), items.len());
                for ((&(n, _, _), d), outcome) in items.iter().zip(data).zip(outcomes) {
                    self.put_outcome(n, d, outcome);
                }
            }
            Op::GetBatch(ns) => {
                let ns = unique(ns, |n| *n);
                let mut buffers: Vec<Vec<u8>> = ns.iter().map(|_| vec![0u8; MAX_LEN]).collect();
                let mut batch: Vec<(BlockId, &mut [u8])> = ns
                    .iter()
                    .zip(buffers.iter_mut())
                    .map(|(&n, b)| (id(n), b.as_mut_slice()))
                    .collect();
                let outcomes = self.store().get_batch(&mut batch);
                drop(batch);
                for ((&n, out), outcome) in ns.iter().zip(&buffers).zip(outcomes) {
                    self.get_outcome(n, out, outcome);
                }
            }
            Op::PutPieces(items) => {
                let items = unique(items, |(n, _, _)| *n);
                let data: Vec<Vec<u8>> = items.iter().map(|&(_, l, s)| bytes(l, s)).collect();
                let pieces: Vec<Vec<&[u8]>> = data
                    .iter()
                    .map(|d| d.chunks(d.len().div_ceil(PIECES)).collect())
                    .collect();
                let batch: Vec<(BlockId, Source<'_>)> = items
                    .iter()
                    .zip(&pieces)
                    .map(|(&(n, _, _), p)| (id(n), Source::HostPieces(p)))
                    .collect();
                let outcomes = self.store().put_from_batch(&batch);
                assert_eq!(outcomes.len(), items.len());
                for ((&(n, _, _), d), outcome) in items.iter().zip(data).zip(outcomes) {
                    self.put_outcome(n, d, outcome);
                }
            }
            Op::GetPieces(ns) => {
                let ns = unique(ns, |n| *n);
                let mut buffers: Vec<Vec<u8>> = ns.iter().map(|_| vec![0u8; MAX_LEN]).collect();
                let outcomes = {
                    let mut pieces: Vec<Vec<&mut [u8]>> = buffers
                        .iter_mut()
                        .map(|b| b.chunks_mut(MAX_LEN.div_ceil(PIECES)).collect())
                        .collect();
                    let mut batch: Vec<(BlockId, Dest<'_>)> = ns
                        .iter()
                        .zip(pieces.iter_mut())
                        .map(|(&n, p)| (id(n), Dest::HostPieces(p.as_mut_slice())))
                        .collect();
                    self.store().get_into_batch(&mut batch)
                };
                for ((&n, out), outcome) in ns.iter().zip(&buffers).zip(outcomes) {
                    self.get_outcome(n, out, outcome);
                }
            }
        }
        if self.setup.write_through {
            // Let the background copies (and the room they make) settle before looking.
            self.flush();
        }
        self.check();
    }

    /// Flushes; a write-through copy may fail for want of a long enough free extent in
    /// the small persistent tier (fragmentation), which is counted and reported.
    fn flush(&mut self) {
        match self.store().flush() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::TierFull && e.operation() == Some("write_through") => {
                assert!(self.store().stats().write_through_failures > 0, "{e}");
            }
            Err(e) => panic!("flush: {e}"),
        }
    }

    fn check(&mut self) {
        let store = self.store.as_ref().expect("open store");
        let mut held: BTreeMap<BlockId, Vec<usize>> = BTreeMap::new();
        for (position, tier) in store.tiers().iter().enumerate() {
            assert!(
                tier.used() <= tier.capacity(),
                "{} over capacity",
                tier.name()
            );
            for (block, _) in tier.ids() {
                held.entry(block).or_default().push(position);
            }
        }
        let stored: BTreeSet<BlockId> = store.ids().into_iter().collect();
        assert_eq!(
            stored,
            held.keys().copied().collect::<BTreeSet<_>>(),
            "the index and the tiers disagree on which blocks exist"
        );
        // Blocks the model has and the store lost must have been evicted, and counted.
        let lost: Vec<u8> = self
            .model
            .keys()
            .copied()
            .filter(|n| !stored.contains(&id(*n)))
            .collect();
        let stats = store.stats();
        let evicted = stats.evictions - self.expected.evictions;
        assert!(
            lost.len() as u64 <= evicted && evicted <= lost.len() as u64 + self.expected.replaced,
            "blocks {lost:?} vanished, {evicted} evictions counted"
        );
        self.expected.evictions = stats.evictions;
        self.expected.replaced = 0;
        for n in lost {
            self.model.remove(&n);
        }
        assert_eq!(
            stored.len(),
            self.model.len(),
            "the store has blocks the model lacks"
        );
        let mut per_tier = vec![(0u64, 0u64, 0u64); store.tiers().len()];
        for (&n, want) in &self.model {
            let block = id(n);
            let tier = store.tier_of(block).expect("stored block has a tier");
            let copy = store.copy_tier_of(block);
            if !self.setup.write_through {
                assert_eq!(copy, None, "a copy without write-through");
            }
            let mut expect_in = vec![tier];
            expect_in.extend(copy);
            assert_eq!(held[&block], expect_in, "block {n} is in the wrong tiers");
            for t in expect_in {
                let mut out = vec![0u8; want.len()];
                let got = store.tiers()[t].get(block, &mut out).expect("tier read");
                assert_eq!(got, want.len());
                assert_eq!(&out, want, "tier {t} holds wrong bytes for block {n}");
            }
            per_tier[tier].0 += 1;
            per_tier[tier].1 += want.len() as u64;
            if let Some(c) = copy {
                per_tier[c].2 += 1;
            }
        }
        assert_eq!(stats.blocks, self.model.len() as u64);
        assert_eq!(
            stats.bytes,
            self.model.values().map(|v| v.len() as u64).sum::<u64>()
        );
        for (t, (blocks, bytes, copies)) in per_tier.into_iter().enumerate() {
            let ts = &stats.tiers[t];
            assert_eq!(
                (ts.blocks, ts.bytes, ts.copies),
                (blocks, bytes, copies),
                "tier {t} stats"
            );
        }
        assert_eq!(stats.puts, self.expected.puts, "puts");
        assert_eq!(stats.dedup_hits, self.expected.dedup_hits, "dedup hits");
        assert_eq!(stats.hits, self.expected.hits, "hits");
        assert_eq!(stats.misses, self.expected.misses, "misses");
        assert!(stats.fallback_puts <= stats.puts);
        if self.setup.promote {
            assert!(stats.promotions <= stats.hits, "more promotions than reads");
        } else {
            assert_eq!(stats.promotions, 0, "promoted with promote_on_read off");
        }
    }
}

fn unique<T: Clone, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items
        .iter()
        .filter(|item| seen.insert(key(item)))
        .cloned()
        .collect()
}

/// A batch read of blocks found in two slower tiers promotes them with one batch per
/// tier they came from (not one move each), into the fastest tier, bytes intact.
#[test]
fn batch_reads_promote_in_one_batch_per_tier_they_came_from() {
    let len = 4096usize;
    let held: Vec<Arc<Held>> = [8u64, 8, 64]
        .iter()
        .enumerate()
        .map(|(i, &blocks)| Arc::new(Held::new(format!("t{i}"), blocks * len as u64, false)))
        .collect();
    let tiers: Vec<Arc<dyn Tier>> = held
        .iter()
        .map(|h| Arc::clone(h) as Arc<dyn Tier>)
        .collect();
    let policy = StorePolicy {
        promote_on_read: true,
        ..StorePolicy::default()
    };
    let store = CascadeStore::new(tiers, policy).expect("store");
    let data: Vec<Vec<u8>> = (0..24).map(|n| bytes(len, n)).collect();
    for (n, d) in data.iter().enumerate() {
        store.put(id(n as u8), d).expect("put");
    }
    // Oldest first went down: 0..8 in the last tier, 8..16 in the middle, 16..24 on top.
    let place = |n: u8| store.tier_of(id(n));
    assert_eq!((place(0), place(8), place(16)), (Some(2), Some(1), Some(0)));
    let wanted: Vec<u8> = (0..4).chain(8..12).collect();
    let mut outs: Vec<Vec<u8>> = wanted.iter().map(|_| vec![0u8; len]).collect();
    let batches_before = held[0].batches.load(Ordering::Relaxed);
    let results = {
        let mut batch: Vec<(BlockId, &mut [u8])> = wanted
            .iter()
            .zip(outs.iter_mut())
            .map(|(&n, o)| (id(n), o.as_mut_slice()))
            .collect();
        store.get_batch(&mut batch)
    };
    for ((&n, out), result) in wanted.iter().zip(&outs).zip(results) {
        assert_eq!(result.expect("get"), Some(len));
        assert_eq!(out, &data[usize::from(n)], "block {n}");
        assert_eq!(place(n), Some(0), "block {n} promoted to the top");
    }
    assert_eq!(
        held[0].batches.load(Ordering::Relaxed) - batches_before,
        2,
        "one batch from each slower tier"
    );
    let stats = store.stats();
    assert_eq!(stats.tiers[0].promotions, 8);
    assert_eq!(stats.blocks, 24, "nothing lost making room");
    for (n, d) in data.iter().enumerate() {
        let mut out = vec![0u8; len];
        assert_eq!(store.get(id(n as u8), &mut out).expect("get"), Some(len));
        assert_eq!(&out, d, "block {n}");
    }
    for t in store.tiers() {
        assert!(t.used() <= t.capacity(), "{} over capacity", t.name());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_keep_bytes_places_capacity_and_stats(
        setup in setup(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut harness = Harness::new(setup);
        harness.check();
        for op in &ops {
            harness.step(op);
        }
    }
}
