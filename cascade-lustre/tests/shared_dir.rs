//! Several writers on one directory: `refresh` shows each tier what the others stored,
//! appended, removed and compacted since it opened, as a fresh open would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::store::StorePolicy;
use cascade_core::{
    BlockId, CascadeStore, ErrorKind, MemoryTier, MemoryTierConfig, Tier, TierRefresh,
};
use cascade_lustre::{FileTier, FileTierConfig};

fn open(dir: &Path, writer: &str) -> FileTier {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(256);
    config.segment_size = ByteSize::mib(1);
    config.writer_id = Some(writer.into());
    config.background_compaction = false;
    FileTier::open(writer, &config).unwrap()
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) + 1)
}

fn block(n: u64) -> Vec<u8> {
    random_block(n, 40_000 + (n as usize % 5) * 3000)
}

fn read(tier: &dyn Tier, n: u64) -> Vec<u8> {
    let mut out = vec![0u8; 128 * 1024];
    let len = tier
        .get(id(n), &mut out)
        .unwrap_or_else(|e| panic!("{}: block {n}: {e}", tier.name()));
    out.truncate(len);
    out
}

fn added_ids(found: &TierRefresh) -> BTreeMap<BlockId, u64> {
    found.added.iter().copied().collect()
}

fn ids_of(tier: &dyn Tier) -> BTreeSet<BlockId> {
    tier.ids().into_iter().map(|(id, _)| id).collect()
}

#[test]
fn refresh_shows_another_writers_puts_appends_removals_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), "b");
    let a = open(dir.path(), "a");
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();

    // A batch over about two 1 MiB segments: sealed ones and the one being appended.
    let batch: Vec<(BlockId, Vec<u8>)> = (0..40).map(|n| (id(n), block(n))).collect();
    let items: Vec<(BlockId, &[u8])> = batch.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    for result in a.put_batch(&items) {
        result.unwrap();
    }
    a.flush().unwrap();
    expected.extend((0..40).map(|n| (n, block(n))));
    assert!(!b.contains(id(0)), "seen before any refresh");
    assert_eq!(
        b.get(id(0), &mut [0u8; 64]).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let found = b.refresh().unwrap();
    let want: BTreeMap<BlockId, u64> = batch.iter().map(|(i, d)| (*i, d.len() as u64)).collect();
    assert_eq!(added_ids(&found), want);
    assert!(found.removed.is_empty());
    for (n, data) in &expected {
        assert!(read(&b, *n) == *data, "block {n}");
    }
    assert_eq!(b.used(), a.used());
    assert_eq!(b.refresh().unwrap(), TierRefresh::default(), "nothing new");

    // Appends to A's segment in progress, not sealed.
    for n in 40..46 {
        a.put(id(n), &block(n)).unwrap();
        expected.insert(n, block(n));
    }
    let found = b.refresh().unwrap();
    assert_eq!(
        added_ids(&found).keys().copied().collect::<Vec<_>>(),
        (40..46).map(id).collect::<Vec<_>>()
    );
    for n in 40..46 {
        assert!(read(&b, n) == block(n), "appended block {n}");
    }

    // B's own block, then A removes one and replaces another.
    b.put(id(500), &block(500)).unwrap();
    assert!(a.remove(id(3)).unwrap());
    expected.remove(&3);
    let newer = random_block(9_999, 33_333);
    a.put(id(5), &newer).unwrap();
    expected.insert(5, newer.clone());
    let found = b.refresh().unwrap();
    assert_eq!(found.removed, vec![id(3)]);
    assert_eq!(added_ids(&found), BTreeMap::from([(id(5), 33_333)]));
    assert_eq!(
        b.get(id(3), &mut [0u8; 64]).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(read(&b, 5) == newer, "replaced bytes");
    assert!(read(&b, 500) == block(500), "own block kept");
    assert_eq!(b.used(), a.used() + record_bytes(&b, &[500]));

    // A sees B's block the same way.
    let found = a.refresh().unwrap();
    assert_eq!(added_ids(&found), BTreeMap::from([(id(500), 40_000)]));
    assert_eq!(a.used(), b.used());

    // A compacts most of its segments away: B follows the copies.
    a.seal_active().unwrap();
    for n in (0..46).filter(|n| n % 4 != 0 && *n != 3) {
        assert!(a.remove(id(n)).unwrap());
        expected.remove(&n);
    }
    let before: BTreeSet<_> = a.segment_paths().into_iter().collect();
    let compacted = a.compact().unwrap();
    assert!(compacted.segments > 0, "{compacted:?}");
    let after: BTreeSet<_> = a.segment_paths().into_iter().collect();
    assert!(
        before.difference(&after).count() > 0,
        "segment files deleted"
    );

    let found = b.refresh().unwrap();
    assert!(
        found.added.is_empty(),
        "copies are not new blocks: {found:?}"
    );
    let removed: BTreeSet<BlockId> = found.removed.iter().copied().collect();
    let want_removed: BTreeSet<BlockId> =
        (0..46).filter(|n| n % 4 != 0 && *n != 3).map(id).collect();
    assert_eq!(removed, want_removed);
    for (n, data) in &expected {
        assert!(read(&b, *n) == *data, "block {n} after compaction");
    }
    assert!(read(&b, 500) == block(500));
    for path in b.segment_paths() {
        assert!(path.exists(), "{} still known", path.display());
    }
    let mut live: BTreeSet<BlockId> = expected.keys().map(|n| id(*n)).collect();
    live.insert(id(500));
    assert_eq!(ids_of(&b), live);
    assert_eq!(ids_of(&a), live);
    assert_eq!(b.used(), a.used());

    // A third tier opened now computes the same.
    let c = open(dir.path(), "c");
    assert_eq!(ids_of(&c), live);
    assert_eq!(c.used(), b.used());
    for (n, data) in &expected {
        assert!(read(&c, *n) == *data, "fresh open: block {n}");
    }

    // A closes (sealing its last segment): nothing changes for B.
    drop(a);
    assert_eq!(b.refresh().unwrap(), TierRefresh::default());
    assert_eq!(ids_of(&b), live);
}

/// Bytes of the records of `ns` in `tier` (header and padding included).
fn record_bytes(tier: &dyn Tier, ns: &[u64]) -> u64 {
    ns.iter()
        .map(|n| {
            let len = tier.len_of(id(*n)).unwrap();
            cascade_lustre::format::record_span(len)
        })
        .sum()
}

#[test]
fn a_newer_write_here_wins_over_an_older_one_there_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), "b");
    let a = open(dir.path(), "a");
    a.put(id(1), &block(1)).unwrap();
    let mine = random_block(77, 12_345);
    b.put(id(1), &mine).unwrap();
    let found = b.refresh().unwrap();
    assert_eq!(found, TierRefresh::default(), "an older record is no news");
    assert!(read(&b, 1) == mine);
    let found = a.refresh().unwrap();
    assert_eq!(added_ids(&found), BTreeMap::from([(id(1), 12_345)]));
    assert!(read(&a, 1) == mine);
    assert_eq!(a.used(), b.used());
}

fn file_store(dir: &Path, writer: &str, memory: bool) -> CascadeStore {
    let mut tiers: Vec<Arc<dyn Tier>> = Vec::new();
    if memory {
        let config = MemoryTierConfig {
            capacity: ByteSize::mib(8),
            prefault: false,
        };
        tiers.push(Arc::new(MemoryTier::open("memory0", &config).unwrap()));
    }
    tiers.push(Arc::new(open(dir, writer)));
    CascadeStore::new(tiers, StorePolicy::default()).unwrap()
}

#[test]
fn a_store_refresh_indexes_other_writers_blocks_and_deletes_nothing_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let b = file_store(dir.path(), "b", false);
    let a = file_store(dir.path(), "a", false);
    b.put(id(100), &block(100)).unwrap();
    for n in 0..5 {
        a.put(id(n), &block(n)).unwrap();
    }
    assert!(!b.contains(id(0)));
    let report = b.refresh().unwrap();
    assert_eq!((report.added, report.removed), (5, 0));
    assert_eq!(report.tiers.len(), 1);
    assert_eq!(report.tiers[0].added, 5);
    let mut out = vec![0u8; 128 * 1024];
    for n in 0..5 {
        let len = b.get(id(n), &mut out).unwrap().unwrap();
        assert!(out[..len] == block(n)[..], "block {n}");
    }
    let len = b.get(id(100), &mut out).unwrap().unwrap();
    assert!(out[..len] == block(100)[..], "own block kept");
    assert_eq!(b.stats().blocks, 6);
    assert_eq!(
        serde_json::to_value(&report).unwrap()["added"],
        serde_json::json!(5)
    );

    assert!(a.remove(id(2)).unwrap());
    let report = b.refresh().unwrap();
    assert_eq!((report.added, report.removed), (0, 1));
    assert_eq!(b.get(id(2), &mut out).unwrap(), None);
    assert_eq!(b.stats().blocks, 5);

    // Replaced by A with another length (removed first: the store deduplicates puts of
    // an id it holds): same place in B's index, new length and bytes.
    let newer = random_block(4_444, 9_000);
    assert!(a.remove(id(4)).unwrap());
    a.put(id(4), &newer).unwrap();
    let report = b.refresh().unwrap();
    assert_eq!((report.added, report.removed), (0, 0));
    assert_eq!(report.tiers[0].replaced, 1);
    assert_eq!(b.len_of(id(4)), Some(9_000));
    let len = b.get(id(4), &mut out).unwrap().unwrap();
    assert!(out[..len] == newer[..]);
    let stats = b.stats();
    assert_eq!(stats.blocks, 5);
    let want_bytes: u64 = [0u64, 1, 3, 100]
        .iter()
        .map(|n| block(*n).len() as u64)
        .sum();
    assert_eq!(stats.bytes, want_bytes + 9_000);
}

#[test]
fn a_block_held_in_a_faster_tier_stays_there_and_the_other_writers_copy_stays() {
    let dir = tempfile::tempdir().unwrap();
    let b = file_store(dir.path(), "b", true);
    let a = file_store(dir.path(), "a", false);
    let mine = random_block(7, 20_000);
    b.put(id(7), &mine).unwrap();
    assert_eq!(b.tier_of(id(7)), Some(0));
    a.put(id(7), &block(7)).unwrap();
    a.put(id(8), &block(8)).unwrap();
    let report = b.refresh().unwrap();
    assert_eq!(report.added, 1, "{report:?}");
    assert_eq!(b.tier_of(id(7)), Some(0), "the faster copy stays indexed");
    assert_eq!(b.tier_of(id(8)), Some(1));
    let mut out = vec![0u8; 128 * 1024];
    let len = b.get(id(7), &mut out).unwrap().unwrap();
    assert!(out[..len] == mine[..]);
    let len = a.get(id(7), &mut out).unwrap().unwrap();
    assert!(
        out[..len] == block(7)[..],
        "the other writer's record is kept"
    );
}

#[test]
fn copies_seen_before_their_originals_vanish_are_followed_once_they_do() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), "b");
    let a = open(dir.path(), "a");
    for n in 0..30 {
        a.put(id(n), &block(n)).unwrap();
    }
    b.refresh().unwrap();
    a.seal_active().unwrap();
    let live: Vec<u64> = (0..30).filter(|n| n % 4 == 0).collect();
    for n in (0..30).filter(|n| n % 4 != 0) {
        assert!(a.remove(id(n)).unwrap());
    }
    // Put the compacted files back for a while: B then lists the copies while the
    // originals are still there, as when it refreshes between A's copy and A's delete.
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = a
        .segment_paths()
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(a.compact().unwrap().segments > 0);
    let mut restored = Vec::new();
    for (path, bytes) in saved {
        if !path.exists() {
            std::fs::write(&path, bytes).unwrap();
            restored.push(path);
        }
    }
    assert!(!restored.is_empty());
    let found = b.refresh().unwrap();
    assert!(found.added.is_empty(), "{found:?}");
    assert_eq!(found.removed.len(), 30 - live.len());
    for n in &live {
        assert!(read(&b, *n) == block(*n), "block {n}");
    }
    for path in &restored {
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(b.refresh().unwrap(), TierRefresh::default());
    for n in &live {
        assert!(
            read(&b, *n) == block(*n),
            "block {n} after the originals went"
        );
    }
    for path in b.segment_paths() {
        assert!(path.exists(), "{} still known", path.display());
    }
    assert_eq!(b.used(), a.used());
    assert_eq!(ids_of(&b), live.iter().map(|n| id(*n)).collect());
}
