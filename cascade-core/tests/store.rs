//! The store's invariants: capacity, durability of acknowledged puts, exact-once
//! placement through demotions, dedup, promotion, and concurrency.

use std::collections::HashMap;
use std::sync::Arc;

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::store::StorePolicy;
use cascade_core::{
    BlockId, CascadeStore, ErrorKind, MemoryTier, MemoryTierConfig, PutOutcome, Tier,
};

fn memory(name: &str, capacity: u64) -> Arc<dyn Tier> {
    let config = MemoryTierConfig {
        capacity: ByteSize(capacity),
        prefault: false,
    };
    Arc::new(MemoryTier::open(name, &config).expect("memory tier"))
}

fn store_over(capacities: &[u64], policy: StorePolicy) -> CascadeStore {
    let tiers = capacities
        .iter()
        .enumerate()
        .map(|(i, &cap)| memory(&format!("t{i}"), cap))
        .collect();
    CascadeStore::new(tiers, policy).expect("store")
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) << 17 | 0xABC)
}

/// Every indexed block is in exactly the tier the store reports, in no other, and no
/// tier holds a block the store does not know.
fn assert_consistent(store: &CascadeStore) {
    let mut held: HashMap<BlockId, Vec<usize>> = HashMap::new();
    for (position, tier) in store.tiers().iter().enumerate() {
        assert!(
            tier.used() <= tier.capacity(),
            "{} over capacity",
            tier.name()
        );
        for (id, _) in tier.ids() {
            held.entry(id).or_default().push(position);
        }
    }
    let ids = store.ids();
    assert_eq!(
        ids.len(),
        held.len(),
        "index and tiers disagree on the number of blocks"
    );
    for id in ids {
        let tiers = held.get(&id).cloned().unwrap_or_default();
        assert_eq!(tiers.len(), 1, "{id} is in tiers {tiers:?}");
        assert_eq!(
            Some(tiers[0]),
            store.tier_of(id),
            "index points at the wrong tier for {id}"
        );
    }
}

fn read(store: &CascadeStore, id: BlockId, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0xEEu8; len];
    let n = store.get(id, &mut out).expect("get")?;
    out.truncate(n);
    Some(out)
}

#[test]
fn overflow_demotes_and_nothing_is_lost_while_the_last_tier_has_room() {
    let block = 64 * 1024;
    let store = store_over(
        &[8 * block as u64, 64 * block as u64],
        StorePolicy {
            promote_on_read: false,
            ..StorePolicy::default()
        },
    );
    let blocks: Vec<(BlockId, Vec<u8>)> =
        (0..40).map(|n| (id(n), random_block(n, block))).collect();
    for (id, data) in &blocks {
        assert_eq!(store.put(*id, data).expect("put"), PutOutcome::Stored);
        assert_consistent(&store);
    }
    let stats = store.stats();
    assert_eq!(stats.blocks, 40);
    assert_eq!(stats.evictions, 0);
    assert!(stats.tiers[0].demotions >= 32, "{stats:?}");
    assert_eq!(stats.tiers[0].blocks, 8);
    for (id, data) in &blocks {
        assert_eq!(
            read(&store, *id, block).as_deref(),
            Some(data.as_slice()),
            "{id}"
        );
    }
    // The newest blocks stay in the fastest tier.
    assert_eq!(store.tier_of(id(39)), Some(0));
    assert_eq!(store.tier_of(id(0)), Some(1));
}

#[test]
fn last_tier_evicts_least_recently_used_and_the_rest_read_back() {
    let block = 32 * 1024;
    let store = store_over(
        &[4 * block as u64, 8 * block as u64],
        StorePolicy {
            promote_on_read: false,
            ..StorePolicy::default()
        },
    );
    for n in 0..12 {
        store.put(id(n), &random_block(n, block)).expect("put");
    }
    // Touch block 0 (in the last tier) so it is no longer the coldest there.
    assert!(read(&store, id(0), block).is_some());
    // Seven more puts push seven blocks out of the last tier: 1..=7, not 0.
    for n in 12..19 {
        store.put(id(n), &random_block(n, block)).expect("put");
        assert_consistent(&store);
    }
    let stats = store.stats();
    assert_eq!(stats.blocks, 12);
    assert_eq!(stats.evictions, 7);
    assert!(store.contains(id(0)), "the recently read block survived");
    assert!(!store.contains(id(1)), "the coldest block was evicted");
    for n in 0..19 {
        if let Some(bytes) = read(&store, id(n), block) {
            assert_eq!(bytes, random_block(n, block), "block {n}");
        }
    }
}

#[test]
fn dedup_copies_nothing_and_is_counted() {
    let store = store_over(&[1 << 20], StorePolicy::default());
    let data = random_block(1, 4096);
    assert_eq!(store.put(id(1), &data).expect("put"), PutOutcome::Stored);
    let used = store.tiers()[0].used();
    assert_eq!(
        store.put(id(1), &random_block(2, 4096)).expect("put"),
        PutOutcome::Deduplicated
    );
    assert_eq!(store.tiers()[0].used(), used);
    assert_eq!(read(&store, id(1), 4096), Some(data));
    let stats = store.stats();
    assert_eq!(
        (stats.puts, stats.dedup_hits, stats.dedup_bytes_saved),
        (1, 1, 4096)
    );
}

#[test]
fn without_dedup_a_put_replaces_even_across_tiers() {
    let block = 16 * 1024;
    let policy = StorePolicy {
        dedup: false,
        promote_on_read: false,
        ..StorePolicy::default()
    };
    let store = store_over(&[2 * block as u64, 16 * block as u64], policy);
    for n in 0..4 {
        store.put(id(n), &random_block(n, block)).expect("put");
    }
    assert_eq!(store.tier_of(id(0)), Some(1));
    let newer = random_block(100, block / 2);
    assert_eq!(store.put(id(0), &newer).expect("put"), PutOutcome::Stored);
    assert_eq!(store.tier_of(id(0)), Some(0));
    assert_eq!(read(&store, id(0), block), Some(newer));
    assert_consistent(&store);
}

#[test]
fn reads_promote_to_the_fastest_tier() {
    let block = 16 * 1024;
    let store = store_over(
        &[2 * block as u64, 16 * block as u64],
        StorePolicy::default(),
    );
    for n in 0..6 {
        store.put(id(n), &random_block(n, block)).expect("put");
    }
    assert_eq!(store.tier_of(id(0)), Some(1));
    assert_eq!(read(&store, id(0), block), Some(random_block(0, block)));
    assert_eq!(store.tier_of(id(0)), Some(0));
    assert_eq!(store.stats().tiers[0].promotions, 1);
    assert_consistent(&store);
    for n in 0..6 {
        assert_eq!(read(&store, id(n), block), Some(random_block(n, block)));
    }
    assert_consistent(&store);
}

#[test]
fn bad_input_gives_typed_errors_and_keeps_data() {
    let store = store_over(&[64 * 1024, 128 * 1024], StorePolicy::default());
    store.put(id(1), &random_block(1, 1000)).expect("put");
    let err = store
        .put(id(2), &vec![0u8; 200 * 1024])
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let err = store.get(id(1), &mut [0u8; 10]).expect_err("short buffer");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(store.get(id(3), &mut [0u8; 10]).expect("miss"), None);
    assert_eq!(read(&store, id(1), 1000), Some(random_block(1, 1000)));
    assert_eq!(store.stats().misses, 1);
}

#[test]
fn remove_and_clear() {
    let store = store_over(&[1 << 20, 1 << 20], StorePolicy::default());
    for n in 0..10 {
        store.put(id(n), &random_block(n, 8192)).expect("put");
    }
    assert!(store.remove(id(3)).expect("remove"));
    assert!(!store.remove(id(3)).expect("remove again"));
    assert!(!store.contains(id(3)));
    assert_consistent(&store);
    store.clear().expect("clear");
    assert_eq!(store.stats().blocks, 0);
    assert!(store.tiers().iter().all(|t| t.used() == 0));
    assert!(store.ids().is_empty());
}

#[test]
fn batches_round_trip_with_overflow_and_misses() {
    let block = 8 * 1024;
    let store = store_over(
        &[16 * block as u64, 64 * block as u64],
        StorePolicy::default(),
    );
    let blocks: Vec<(BlockId, Vec<u8>)> =
        (0..40).map(|n| (id(n), random_block(n, block))).collect();
    let items: Vec<(BlockId, &[u8])> = blocks.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    for result in store.put_batch(&items) {
        assert_eq!(result.expect("put"), PutOutcome::Stored);
    }
    for result in store.put_batch(&items[..5]) {
        assert_eq!(result.expect("put"), PutOutcome::Deduplicated);
    }
    assert_consistent(&store);
    let mut outs: Vec<Vec<u8>> = (0..41).map(|_| vec![0u8; block]).collect();
    let mut requests: Vec<(BlockId, &mut [u8])> = outs
        .iter_mut()
        .enumerate()
        .map(|(n, out)| (id(n as u64), out.as_mut_slice()))
        .collect();
    let results = store.get_batch(&mut requests);
    for (n, result) in results.into_iter().enumerate() {
        let got = result.expect("get");
        if n == 40 {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some(block));
            assert_eq!(outs[n], blocks[n].1, "block {n}");
        }
    }
    assert_consistent(&store);
}

#[test]
fn reopening_over_the_same_tiers_rebuilds_the_index_and_drops_duplicates() {
    let fast = memory("fast", 1 << 20);
    let slow = memory("slow", 1 << 20);
    let store =
        CascadeStore::new(vec![fast.clone(), slow.clone()], StorePolicy::default()).expect("store");
    for n in 0..5 {
        store.put(id(n), &random_block(n, 4096)).expect("put");
    }
    drop(store);
    // An interrupted move leaves a copy in both tiers.
    slow.put(id(2), &random_block(2, 4096)).expect("put");
    let store = CascadeStore::new(vec![fast, slow.clone()], StorePolicy::default()).expect("store");
    assert_eq!(store.stats().blocks, 5);
    assert!(!slow.contains(id(2)), "the slower duplicate is dropped");
    for n in 0..5 {
        assert_eq!(read(&store, id(n), 4096), Some(random_block(n, 4096)));
    }
    assert_consistent(&store);
}

#[test]
fn many_threads_put_get_remove_with_demotions() {
    let block = 4096;
    let store = Arc::new(store_over(
        &[24 * block as u64, 48 * block as u64, 4096 * block as u64],
        StorePolicy::default(),
    ));
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                for round in 0..150u64 {
                    let n = t * 1000 + round;
                    let data = random_block(n, block);
                    store.put(id(n), &data).expect("put");
                    let back = (round * 7) % (round + 1);
                    let m = t * 1000 + back;
                    if let Some(bytes) = read(&store, id(m), block) {
                        assert_eq!(bytes, random_block(m, block), "thread {t} block {m}");
                    }
                    if round % 5 == 0 {
                        store.remove(id(n)).expect("remove");
                    }
                    // Another thread's block, possibly moving at the same time.
                    let other = ((t + 1) % 6) * 1000 + round / 2;
                    if let Some(bytes) = read(&store, id(other), block) {
                        assert_eq!(bytes, random_block(other, block));
                    }
                }
            });
        }
    });
    assert_consistent(&store);
    let stats = store.stats();
    assert_eq!(stats.evictions, 0, "the last tier had room for everything");
    assert_eq!(stats.blocks, 6 * 120);
    for t in 0..6u64 {
        for round in 0..150u64 {
            let n = t * 1000 + round;
            let stored = read(&store, id(n), block);
            if round % 5 == 0 {
                assert_eq!(stored, None);
            } else {
                assert_eq!(stored, Some(random_block(n, block)), "block {n}");
            }
        }
    }
}

#[test]
fn lookup_prefix_counts_leading_stored_keys() {
    let store = store_over(&[1 << 20], StorePolicy::default());
    let keys: Vec<BlockId> = (0..6).map(id).collect();
    for &n in &[0u64, 1, 2, 4] {
        store.put(id(n), &[1, 2, 3]).expect("put");
    }
    assert_eq!(store.lookup_prefix(&keys), 3);
    assert_eq!(store.lookup_prefix(&keys[3..]), 0);
    assert_eq!(store.lookup_prefix(&[]), 0);
}
