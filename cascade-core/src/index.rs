//! The [`Index`] trait and the 256-shard [`ShardedIndex`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher as StdHasher};

use parking_lot::RwLock;

use crate::BlockId;

/// Where a block lives: which tier (position, fastest first) and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the tier in the store's order, 0 = fastest.
    pub tier: usize,
    /// Length of the block in bytes.
    pub len: u64,
}

/// Maps block ids to their location. Shared by all threads.
pub trait Index: Send + Sync {
    /// The location of `id`.
    fn get(&self, id: &BlockId) -> Option<Location>;
    /// Records `id` at `location`; returns the previous location.
    fn insert(&self, id: BlockId, location: Location) -> Option<Location>;
    /// Forgets `id`; returns its location.
    fn remove(&self, id: &BlockId) -> Option<Location>;
    /// Replaces the location of `id` only if it is currently `expected`.
    fn compare_and_set(&self, id: &BlockId, expected: Location, new: Location) -> bool;
    /// Removes `id` only if it is currently at `expected`.
    fn remove_if(&self, id: &BlockId, expected: Location) -> bool;
    /// Number of ids.
    fn len(&self) -> usize;
    /// Whether the index is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets every id.
    fn clear(&self);
}

/// Block ids are usually hash output already, so the map mixes their words with one
/// multiply each instead of running SipHash; the mix keeps sequential synthetic ids
/// spread over the table.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl StdHasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only BlockId is hashed here: its 16 bytes arrive in one call.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// Picks a shard from all 128 bits with a multiply-mix, so sequential synthetic ids
/// spread as evenly as hash output does. The top bits of the product select the shard;
/// the map inside the shard uses the low bits of the id, keeping the two independent.
fn shard_of(id: &BlockId) -> usize {
    let value = id.as_u128();
    let folded = (value as u64) ^ ((value >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SHARDS
}

type IdMap<V> = HashMap<BlockId, V, BuildHasherDefault<IdHasher>>;

/// Number of shards; the documented system used 256 as well.
pub const SHARDS: usize = 256;

/// A concurrent map from [`BlockId`] to a value, split into 256 independently locked
/// shards: readers of one shard proceed together, writers only block their own shard,
/// and nothing takes a global lock.
pub struct ShardedIndex<V = Location> {
    shards: Box<[RwLock<IdMap<V>>]>,
}

impl<V> Default for ShardedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> ShardedIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| RwLock::new(IdMap::default())).collect();
        Self { shards }
    }

    fn shard(&self, id: &BlockId) -> &RwLock<IdMap<V>> {
        &self.shards[shard_of(id)]
    }

    /// Runs `f` on the value of `id` under the shard's read lock.
    pub fn with<R>(&self, id: &BlockId, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.shard(id).read().get(id).map(f)
    }

    /// Runs `f` on the values of all `ids` at once (`None` for an absent id), under the
    /// read locks of their shards, each taken once and in ascending order: a batch that
    /// lends many blocks at once (one DMA for all of them) keeps them all alive.
    pub fn with_many<R>(&self, ids: &[BlockId], f: impl FnOnce(&[Option<&V>]) -> R) -> R {
        let mut shards: Vec<usize> = ids.iter().map(shard_of).collect();
        shards.sort_unstable();
        shards.dedup();
        let guards: Vec<(usize, parking_lot::RwLockReadGuard<'_, IdMap<V>>)> = shards
            .into_iter()
            .map(|s| (s, self.shards[s].read()))
            .collect();
        let values: Vec<Option<&V>> = ids
            .iter()
            .map(|id| {
                let shard = shard_of(id);
                guards
                    .binary_search_by_key(&shard, |(s, _)| *s)
                    .ok()
                    .and_then(|at| guards[at].1.get(id))
            })
            .collect();
        f(&values)
    }

    /// Inserts or replaces; returns the old value.
    pub fn insert_value(&self, id: BlockId, value: V) -> Option<V> {
        self.shard(&id).write().insert(id, value)
    }

    /// Removes; returns the old value.
    pub fn remove_value(&self, id: &BlockId) -> Option<V> {
        self.shard(id).write().remove(id)
    }

    /// Whether `id` is present.
    pub fn contains_key(&self, id: &BlockId) -> bool {
        self.shard(id).read().contains_key(id)
    }

    /// Number of entries (sums the shards; not a snapshot under concurrent writes).
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Removes every entry.
    pub fn clear_all(&self) {
        for shard in self.shards.iter() {
            shard.write().clear();
        }
    }

    /// Calls `f` for every entry, one shard at a time.
    pub fn for_each(&self, mut f: impl FnMut(&BlockId, &V)) {
        for shard in self.shards.iter() {
            for (id, value) in shard.read().iter() {
                f(id, value);
            }
        }
    }

    /// Updates the value of `id` in place under the shard's write lock.
    pub fn update<R>(&self, id: &BlockId, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.shard(id).write().get_mut(id).map(f)
    }
}

impl Index for ShardedIndex<Location> {
    fn get(&self, id: &BlockId) -> Option<Location> {
        self.with(id, |loc| *loc)
    }

    fn insert(&self, id: BlockId, location: Location) -> Option<Location> {
        self.insert_value(id, location)
    }

    fn remove(&self, id: &BlockId) -> Option<Location> {
        self.remove_value(id)
    }

    fn compare_and_set(&self, id: &BlockId, expected: Location, new: Location) -> bool {
        let mut shard = self.shard(id).write();
        match shard.get_mut(id) {
            Some(current) if *current == expected => {
                *current = new;
                true
            }
            _ => false,
        }
    }

    fn remove_if(&self, id: &BlockId, expected: Location) -> bool {
        let mut shard = self.shard(id).write();
        if shard.get(id) == Some(&expected) {
            shard.remove(id);
            true
        } else {
            false
        }
    }

    fn len(&self) -> usize {
        self.count()
    }

    fn clear(&self) {
        self.clear_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn insert_get_remove() {
        let index = ShardedIndex::new();
        let id = BlockId::from_u128(7);
        let loc = Location { tier: 1, len: 10 };
        assert_eq!(Index::insert(&index, id, loc), None);
        assert_eq!(Index::get(&index, &id), Some(loc));
        assert_eq!(index.len(), 1);
        assert_eq!(Index::remove(&index, &id), Some(loc));
        assert!(index.is_empty());
    }

    #[test]
    fn compare_and_set_only_on_match() {
        let index = ShardedIndex::new();
        let id = BlockId::from_u128(1);
        let a = Location { tier: 0, len: 4 };
        let b = Location { tier: 1, len: 4 };
        Index::insert(&index, id, a);
        assert!(!index.compare_and_set(&id, b, a));
        assert!(index.compare_and_set(&id, a, b));
        assert_eq!(Index::get(&index, &id), Some(b));
        assert!(!index.remove_if(&id, a));
        assert!(index.remove_if(&id, b));
    }

    #[test]
    fn ids_spread_over_all_shards() {
        let index: ShardedIndex<u32> = ShardedIndex::new();
        // Sequential ids are the worst case for a naive byte-based shard choice.
        for i in 0..4096u32 {
            index.insert_value(BlockId::from_u128(u128::from(i)), i);
        }
        let sizes: Vec<usize> = index.shards.iter().map(|s| s.read().len()).collect();
        assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
        assert!(sizes.iter().all(|&n| n < 64), "{sizes:?}");
    }

    #[test]
    fn many_threads_insert_and_read() {
        let index = Arc::new(ShardedIndex::new());
        let threads: Vec<_> = (0..8u128)
            .map(|t| {
                let index = Arc::clone(&index);
                std::thread::spawn(move || {
                    for i in 0..2000u128 {
                        let id = BlockId::from_u128((t << 64) | i);
                        Index::insert(
                            &*index,
                            id,
                            Location {
                                tier: t as usize,
                                len: i as u64,
                            },
                        );
                        assert_eq!(Index::get(&*index, &id).map(|l| l.len), Some(i as u64));
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(index.len(), 16_000);
    }
}
