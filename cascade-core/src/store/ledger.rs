//! The ledger: the store's index, each tier's recency order and the counters, kept in
//! step by a few operations.
//!
//! Nothing else in the store touches the index, the recency lists or the counters, so
//! every change of a block's place updates all three at once. Callers hold the block's
//! stripe lock around an operation and the tier I/O it records; the ledger's own locks
//! (index shards, one recency list per tier) are held only inside an operation.

use std::sync::atomic::{AtomicU64, Ordering};

use hashlink::LinkedHashMap;
use parking_lot::Mutex;

use crate::BlockId;
use crate::index::ShardedIndex;
use crate::stats::{StoreCounters, TierCounters, bump, drop_by};

/// Where a block lives in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The tier that serves reads of the block (position, fastest first).
    pub tier: usize,
    /// The block's length in bytes.
    pub len: u64,
    /// A persistent tier below `tier` that holds a second copy written through.
    pub backup: Option<usize>,
    /// Which put stored these bytes, unique per put: a block replaced by a new put of
    /// the same id is a different entry even at the same place and length.
    pub seq: u64,
}

/// Why a block leaves the store without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// The last tier had no room for it.
    Evicted,
    /// Its bytes failed their checksum.
    Corrupt,
    /// Its tier lost it (or another process removed it).
    Lost,
}

/// Which way a block moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// To a slower tier, making room.
    Demote,
    /// To a faster tier, on read; `keep_copy` leaves the old copy as the backup.
    Promote { keep_copy: bool },
    /// To its written-through copy, after the copy it was served from was lost.
    Recover,
    /// To a faster tier, by a prefetch; `keep_copy` as for `Promote`. The block counts
    /// as prefetched until a get reads it there (a prefetch hit) or it leaves that tier
    /// unread (a wasted prefetch).
    Prefetch { keep_copy: bool },
}

type Recency = Mutex<LinkedHashMap<BlockId, u64>>;

/// The index, per-tier recency order and counters of one store.
pub(crate) struct Ledger {
    index: ShardedIndex<Entry>,
    next_seq: AtomicU64,
    recency: Vec<Recency>,
    tiers: Vec<TierCounters>,
    store: StoreCounters,
    /// Prefetched blocks no get has read yet, with the tier the prefetch moved them to.
    unread: ShardedIndex<usize>,
    /// How many entries `unread` has: gets skip its lookup while there are none.
    unread_count: AtomicU64,
}

impl Ledger {
    pub fn new(tiers: usize) -> Self {
        Self {
            index: ShardedIndex::new(),
            next_seq: AtomicU64::new(1),
            recency: (0..tiers)
                .map(|_| Mutex::new(LinkedHashMap::new()))
                .collect(),
            tiers: (0..tiers).map(|_| TierCounters::default()).collect(),
            store: StoreCounters::default(),
            unread: ShardedIndex::new(),
            unread_count: AtomicU64::new(0),
        }
    }

    /// Where `id` lives.
    pub fn get(&self, id: &BlockId) -> Option<Entry> {
        self.index.with(id, |e| *e)
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.index.contains_key(id)
    }

    pub fn count(&self) -> usize {
        self.index.count()
    }

    pub fn ids(&self) -> Vec<BlockId> {
        let mut ids = Vec::with_capacity(self.index.count());
        self.index.for_each(|id, _| ids.push(*id));
        ids
    }

    /// Records a block just written to `tier` by a put; returns where it was before
    /// (the caller removes the old copies the new entry does not keep).
    pub fn admit(&self, id: BlockId, tier: usize, len: u64) -> (Entry, Option<Entry>) {
        let entry = self.fresh(tier, len);
        let previous = self.index.insert_value(id, entry);
        if let Some(previous) = previous {
            self.unaccount(id, previous);
        }
        self.account(id, entry);
        bump(&self.tiers[tier].puts, 1);
        (entry, previous)
    }

    fn fresh(&self, tier: usize, len: u64) -> Entry {
        Entry {
            tier,
            len,
            backup: None,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Indexes a block a tier already holds (found at open or by a refresh) as the
    /// coldest there.
    pub fn adopt(&self, id: BlockId, tier: usize, len: u64) -> Entry {
        let entry = self.fresh(tier, len);
        if let Some(previous) = self.index.insert_value(id, entry) {
            self.unaccount(id, previous);
        }
        self.account(id, entry);
        self.recency[tier].lock().to_front(&id);
        entry
    }

    /// Records `tier` as holding a written-through copy of `id`, if `id` is still at
    /// `expected`.
    pub fn set_backup(&self, id: BlockId, expected: Entry, tier: usize) -> bool {
        let updated = self.index.update(&id, |e| {
            if *e == expected && e.backup.is_none() && tier > e.tier {
                e.backup = Some(tier);
                true
            } else {
                false
            }
        });
        if updated == Some(true) {
            bump(&self.tiers[tier].copies, 1);
            self.recency[tier].lock().insert(id, expected.len);
            true
        } else {
            false
        }
    }

    /// Forgets the backup copy of `id` at `tier`; returns whether there was one (the
    /// caller removes it from the tier).
    pub fn drop_backup(&self, id: BlockId, tier: usize) -> bool {
        let dropped = self.index.update(&id, |e| {
            if e.backup == Some(tier) {
                e.backup = None;
                true
            } else {
                false
            }
        });
        if dropped == Some(true) {
            drop_by(&self.tiers[tier].copies, 1);
            self.recency[tier].lock().remove(&id);
            true
        } else {
            false
        }
    }

    /// A read of `id` served by `tier`: counts the hit there and makes it the most
    /// recently used.
    pub fn hit(&self, tier: usize, id: &BlockId) {
        bump(&self.tiers[tier].hits, 1);
        self.recency[tier].lock().to_back(id);
        if self.unread_count.load(Ordering::Relaxed) > 0
            && self.unread.with(id, |&at| at == tier) == Some(true)
            && self.take_unread(id)
        {
            bump(&self.store.prefetch_hits, 1);
        }
    }

    /// Forgets that `id` was prefetched and not read yet; returns whether it was.
    fn take_unread(&self, id: &BlockId) -> bool {
        if self.unread_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let taken = self.unread.remove_value(id).is_some();
        if taken {
            drop_by(&self.unread_count, 1);
        }
        taken
    }

    /// Counts a hit at `tier` without touching recency (a block served after moving).
    pub fn count_hit(&self, tier: usize) {
        bump(&self.tiers[tier].hits, 1);
    }

    /// Makes `id` the most recently used at `tier` without counting a hit.
    pub fn touch(&self, tier: usize, id: &BlockId) {
        self.recency[tier].lock().to_back(id);
    }

    /// A copy at `tier` failed its checksum (the block itself lives on elsewhere).
    pub fn count_corrupt(&self, tier: usize) {
        bump(&self.tiers[tier].corrupt, 1);
    }

    pub fn miss(&self) {
        bump(&self.store.misses, 1);
    }

    pub fn dedup(&self, len: u64) {
        bump(&self.store.dedup_hits, 1);
        bump(&self.store.dedup_bytes_saved, len);
    }

    /// A put that landed in `tier` although a faster tier could hold the block, because
    /// no room could be made there.
    pub fn fallback(&self, tier: usize) {
        bump(&self.tiers[tier].fallback_puts, 1);
    }

    /// A write-through copy that could not be written.
    pub fn write_through_failed(&self) {
        bump(&self.store.write_through_failures, 1);
    }

    /// Repoints `id` from `from` to tier `to` once its bytes are there; false (nothing
    /// changed) when `id` is no longer at `from`.
    pub fn relocate(&self, id: BlockId, from: Entry, to: usize, how: Move) -> bool {
        let keep = matches!(
            how,
            Move::Promote { keep_copy: true } | Move::Prefetch { keep_copy: true }
        ) && from.backup.is_none();
        let moved = Entry {
            tier: to,
            len: from.len,
            seq: from.seq,
            backup: match from.backup {
                Some(b) if b == to => None,
                Some(b) => Some(b),
                None if keep => Some(from.tier),
                None => None,
            },
        };
        let swapped = self.index.update(&id, |e| {
            if *e == from {
                *e = moved;
                true
            } else {
                false
            }
        });
        if swapped != Some(true) {
            return false;
        }
        if matches!(how, Move::Prefetch { .. }) {
            // Prefetched again, to a faster tier: still unread, counted once.
            self.take_unread(&id);
        }
        self.unaccount(id, from);
        self.account(id, moved);
        match how {
            Move::Demote => bump(&self.tiers[from.tier].demotions, 1),
            Move::Promote { .. } => bump(&self.tiers[to].promotions, 1),
            Move::Recover => {}
            Move::Prefetch { .. } => {
                bump(&self.store.prefetched, 1);
                if self.unread.insert_value(id, to).is_none() {
                    bump(&self.unread_count, 1);
                }
            }
        }
        true
    }

    /// Drops `id` if it is still at `expected`; returns whether it did (the caller
    /// removes the copies from their tiers).
    pub fn forget(&self, id: BlockId, expected: Entry, why: Gone) -> bool {
        let removed = {
            let mut removed = false;
            self.index.update(&id, |e| removed = *e == expected);
            removed && self.index.remove_value(&id).is_some()
        };
        if !removed {
            return false;
        }
        self.unaccount(id, expected);
        match why {
            Gone::Evicted => bump(&self.tiers[expected.tier].evictions, 1),
            Gone::Corrupt => bump(&self.tiers[expected.tier].corrupt, 1),
            Gone::Lost => {}
        }
        true
    }

    /// Drops `id` wherever it is (a remove); returns where it was.
    pub fn remove(&self, id: &BlockId) -> Option<Entry> {
        let entry = self.index.remove_value(id)?;
        self.unaccount(*id, entry);
        Some(entry)
    }

    /// Takes the coldest blocks of `tier` out of its recency order until they add up
    /// to `bytes`. They are picked for a move: the caller gives back the ones it did not
    /// move with [`Ledger::give_back_coldest`].
    pub fn take_coldest(&self, tier: usize, bytes: u64) -> Vec<(BlockId, u64)> {
        let mut recency = self.recency[tier].lock();
        let mut taken = Vec::new();
        let mut sum = 0u64;
        while sum < bytes.max(1) {
            let Some((id, len)) = recency.pop_front() else {
                break;
            };
            sum += len.max(1);
            taken.push((id, len));
        }
        taken
    }

    /// Puts blocks picked by [`Ledger::take_coldest`] back as the coldest of `tier`, in
    /// their order, where the ledger still places them there.
    pub fn give_back_coldest(&self, tier: usize, blocks: &[(BlockId, u64)]) {
        let mut recency = self.recency[tier].lock();
        for &(id, len) in blocks.iter().rev() {
            let here = self
                .index
                .with(&id, |e| e.tier == tier || e.backup == Some(tier));
            if here == Some(true) {
                recency.insert(id, len);
                recency.to_front(&id);
            }
        }
    }

    /// Forgets everything and zeroes the occupancy counters (traffic counters stay).
    pub fn clear(&self) {
        self.index.clear_all();
        let unread = self.unread_count.swap(0, Ordering::Relaxed);
        self.unread.clear_all();
        bump(&self.store.prefetch_wasted, unread);
        for (recency, counters) in self.recency.iter().zip(&self.tiers) {
            recency.lock().clear();
            for c in [&counters.blocks, &counters.bytes, &counters.copies] {
                c.store(0, Ordering::Relaxed);
            }
        }
    }

    pub fn tier_counters(&self, tier: usize) -> &TierCounters {
        &self.tiers[tier]
    }

    pub fn store_counters(&self) -> &StoreCounters {
        &self.store
    }

    fn account(&self, id: BlockId, entry: Entry) {
        let counters = &self.tiers[entry.tier];
        bump(&counters.blocks, 1);
        bump(&counters.bytes, entry.len);
        {
            let mut recency = self.recency[entry.tier].lock();
            recency.remove(&id);
            recency.insert(id, entry.len);
        }
        if let Some(b) = entry.backup {
            bump(&self.tiers[b].copies, 1);
            let mut recency = self.recency[b].lock();
            if !recency.contains_key(&id) {
                recency.insert(id, entry.len);
            }
        }
    }

    fn unaccount(&self, id: BlockId, entry: Entry) {
        if self.take_unread(&id) {
            bump(&self.store.prefetch_wasted, 1);
        }
        let counters = &self.tiers[entry.tier];
        drop_by(&counters.blocks, 1);
        drop_by(&counters.bytes, entry.len);
        self.recency[entry.tier].lock().remove(&id);
        if let Some(b) = entry.backup {
            drop_by(&self.tiers[b].copies, 1);
            self.recency[b].lock().remove(&id);
        }
    }
}
