//! Lending (`CascadeStore::get_with_batch`): every stored block reaches the visit with
//! the bytes that were stored, in ascending positions across tiers; misses, read
//! failures and the visit's own errors are told apart, and only a block that failed its
//! checksum is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::store::StorePolicy;
use cascade_core::{
    BlockId, Capability, CascadeStore, Error, ErrorKind, MemoryTier, MemoryTierConfig, Result, Tier,
};

const BLOCK: usize = 16 * 1024;

/// A memory tier whose reads of chosen blocks fail their checksum (the block is dropped,
/// as real tiers drop it).
struct Damaging {
    inner: MemoryTier,
    corrupt: Mutex<HashSet<BlockId>>,
}

impl Damaging {
    fn new(name: &str, capacity: u64) -> Arc<Self> {
        let config = MemoryTierConfig {
            capacity: ByteSize(capacity),
            prefault: false,
        };
        Arc::new(Self {
            inner: MemoryTier::open(name, &config).expect("memory tier"),
            corrupt: Mutex::new(HashSet::new()),
        })
    }
}

impl Tier for Damaging {
    fn kind(&self) -> &str {
        "damaging"
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
        self.inner.put(id, data)
    }
    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        if self.corrupt.lock().expect("lock").remove(&id) {
            self.inner.remove(id)?;
            return Err(Error::new(ErrorKind::Corrupt, "checksum mismatch").with_context("id", id));
        }
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
}

fn memory(name: &str, capacity: u64) -> Arc<dyn Tier> {
    let config = MemoryTierConfig {
        capacity: ByteSize(capacity),
        prefault: false,
    };
    Arc::new(MemoryTier::open(name, &config).expect("memory tier"))
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) << 20 | 0x1E4D)
}

fn policy() -> StorePolicy {
    StorePolicy {
        promote_on_read: false,
        ..StorePolicy::default()
    }
}

/// What one lend saw: each id's result, a copy of each block the visit got, and the
/// positions in the order they came.
struct Lent {
    results: Vec<Result<bool>>,
    seen: Vec<Option<Vec<u8>>>,
    order: Vec<usize>,
}

/// Lends `ids`, keeping a copy of each block the visit saw and the positions in the
/// order they came.
fn lend_all(store: &CascadeStore, ids: &[BlockId]) -> Lent {
    let mut seen: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
    let mut order = Vec::new();
    let results = store.get_with_batch(ids, &mut |lent| {
        lent.iter()
            .map(|&(position, bytes)| {
                order.push(position);
                seen[position] = Some(bytes.to_vec());
                Ok(())
            })
            .collect()
    });
    Lent {
        results,
        seen,
        order,
    }
}

#[test]
fn every_stored_block_is_lent_with_its_bytes_in_ascending_positions_across_tiers() {
    // The fast tier holds 4 blocks: the first puts move down as later ones arrive.
    let store = CascadeStore::new(
        vec![
            memory("fast", 4 * BLOCK as u64),
            memory("slow", 64 * BLOCK as u64),
        ],
        policy(),
    )
    .expect("store");
    let blocks: Vec<Vec<u8>> = (0..10).map(|n| random_block(n, BLOCK)).collect();
    for (n, block) in blocks.iter().enumerate() {
        store.put(id(n as u64), block).expect("put");
    }
    assert!(
        (0..10).any(|n| store.tier_of(id(n)) == Some(0))
            && (0..10).any(|n| store.tier_of(id(n)) == Some(1)),
        "the blocks span both tiers"
    );
    // Interleave the tiers and put a miss in the middle.
    let ids: Vec<BlockId> = vec![id(9), id(0), id(8), id(1), id(77), id(2), id(7)];
    let hits_before = store.stats().hits;
    let Lent {
        results,
        seen,
        order,
    } = lend_all(&store, &ids);
    for (position, &block) in ids.iter().enumerate() {
        let n = (0..10).find(|&n| id(n) == block);
        match n {
            Some(n) => {
                assert!(
                    matches!(results[position], Ok(true)),
                    "{position}: {:?}",
                    results[position]
                );
                assert_eq!(
                    seen[position].as_deref(),
                    Some(&blocks[n as usize][..]),
                    "bytes of {position}"
                );
            }
            None => {
                assert!(
                    matches!(results[position], Ok(false)),
                    "a miss: {:?}",
                    results[position]
                );
                assert!(seen[position].is_none(), "a miss reaches no visit");
            }
        }
    }
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "positions ascend: {order:?}"
    );
    assert_eq!(
        store.stats().hits,
        hits_before + 6,
        "each lent block is a hit"
    );
}

#[test]
fn a_visit_error_is_that_block_result_and_the_block_stays_stored() {
    let store =
        CascadeStore::new(vec![memory("only", 64 * BLOCK as u64)], policy()).expect("store");
    let blocks: Vec<Vec<u8>> = (0..3).map(|n| random_block(100 + n, BLOCK)).collect();
    for (n, block) in blocks.iter().enumerate() {
        store.put(id(n as u64), block).expect("put");
    }
    let ids: Vec<BlockId> = (0..3).map(id).collect();
    // The visit's error is of the kind a tier reports for bad bytes: it must still not
    // get the block dropped.
    let results = store.get_with_batch(&ids, &mut |lent| {
        lent.iter()
            .map(|&(position, _)| {
                if position == 1 {
                    Err(Error::new(ErrorKind::Corrupt, "the caller's own failure"))
                } else {
                    Ok(())
                }
            })
            .collect()
    });
    assert!(matches!(results[0], Ok(true)));
    match &results[1] {
        Err(e) => assert!(e.to_string().contains("the caller's own failure"), "{e}"),
        other => panic!("the visit's error, got {other:?}"),
    }
    assert!(matches!(results[2], Ok(true)));
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(id(1), &mut out).expect("get"), Some(BLOCK));
    assert_eq!(
        out, blocks[1],
        "the block the visit failed is still served whole"
    );
}

#[test]
fn a_block_failing_its_checksum_is_an_error_never_lent_and_dropped() {
    let tier = Damaging::new("damaging", 64 * BLOCK as u64);
    let store = CascadeStore::new(vec![tier.clone() as Arc<dyn Tier>], policy()).expect("store");
    let blocks: Vec<Vec<u8>> = (0..4).map(|n| random_block(200 + n, BLOCK)).collect();
    for (n, block) in blocks.iter().enumerate() {
        store.put(id(n as u64), block).expect("put");
    }
    tier.corrupt.lock().expect("lock").insert(id(2));
    let ids: Vec<BlockId> = (0..4).map(id).collect();
    let Lent { results, seen, .. } = lend_all(&store, &ids);
    match &results[2] {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
        other => panic!("a corrupt block is an error, got {other:?}"),
    }
    assert!(seen[2].is_none(), "bad bytes never reach the visit");
    assert!(!store.contains(id(2)), "the corrupt block is dropped");
    for n in [0usize, 1, 3] {
        assert!(matches!(results[n], Ok(true)), "{n}: {:?}", results[n]);
        assert_eq!(seen[n].as_deref(), Some(&blocks[n][..]));
    }
}

#[test]
fn a_visit_answering_the_wrong_count_fails_those_blocks_without_dropping_them() {
    let store =
        CascadeStore::new(vec![memory("only", 64 * BLOCK as u64)], policy()).expect("store");
    let block = random_block(300, BLOCK);
    store.put(id(0), &block).expect("put");
    store.put(id(1), &block).expect("put");
    let results = store.get_with_batch(&[id(0), id(1)], &mut |_| Vec::new());
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(
        store.contains(id(0)) && store.contains(id(1)),
        "nothing is dropped"
    );
}
