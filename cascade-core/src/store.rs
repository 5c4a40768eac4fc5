//! [`CascadeStore`]: tiers ordered fastest first behind one sharded index.
//!
//! Placement: a put lands in the fastest tier that can take the block; when that tier is
//! full, its least recently used blocks move down one tier (recursively), and the last
//! tier evicts. A move copies into the lower tier first, then repoints the index, then
//! removes the upper copy, all under the block's stripe lock, so a block is never in zero
//! tiers and the index never points at a tier that lacks it. No thread ever holds two
//! stripe locks, and room is made before a lock is taken, so moves cannot deadlock.
//!
//! Device memory: [`CascadeStore::put_device`] and [`CascadeStore::get_device`] take GPU
//! addresses and go only through tiers whose capability has `device_memory` (the GPU
//! tier), which copy device to device. A device read of a block held by a host tier
//! promotes it into the GPU tier first, through the same move as a promotion on read.

use std::sync::Arc;

use hashlink::LinkedHashMap;
use parking_lot::{Mutex, MutexGuard};
use rayon::prelude::*;

use crate::config::CascadeConfig;
use crate::index::{Index, Location, ShardedIndex};
use crate::stats::{StoreCounters, StoreStats, TierCounters, TierStats, bump, drop_by, read};
use crate::tier::Tier;
use crate::{BlockId, Error, ErrorKind, Hasher, Result};

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The bytes were copied into a tier.
    Stored,
    /// The id was already stored; nothing was copied (dedup).
    Deduplicated,
}

/// What [`CascadeStore::refresh`] changed in the store's index.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    /// Blocks newly indexed, over all tiers.
    pub added: u64,
    /// Blocks dropped from the index, over all tiers.
    pub removed: u64,
    /// The same per tier, fastest first.
    pub tiers: Vec<TierRefreshCounts>,
}

/// What [`CascadeStore::refresh`] changed at one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierRefreshCounts {
    /// Tier instance name.
    pub name: String,
    /// Blocks newly indexed at this tier.
    pub added: u64,
    /// Blocks the store already placed here whose length changed because another
    /// process replaced them.
    pub replaced: u64,
    /// Blocks dropped from the index because another process removed them here.
    pub removed: u64,
}

/// Store-wide policy, taken from [`CascadeConfig`].
#[derive(Debug, Clone)]
pub struct StorePolicy {
    /// See [`CascadeConfig::dedup`].
    pub dedup: bool,
    /// See [`CascadeConfig::promote_on_read`].
    pub promote_on_read: bool,
    /// See [`CascadeConfig::num_io_threads`].
    pub num_io_threads: usize,
}

impl Default for StorePolicy {
    fn default() -> Self {
        Self::from(&CascadeConfig::default())
    }
}

impl From<&CascadeConfig> for StorePolicy {
    fn from(config: &CascadeConfig) -> Self {
        Self {
            dedup: config.dedup,
            promote_on_read: config.promote_on_read,
            num_io_threads: config.num_io_threads,
        }
    }
}

const STRIPES: usize = 1024;
/// How many times a put retries a tier that reported full after room was made (another
/// thread may have taken the room meanwhile) before trying the next tier.
const PUT_ATTEMPTS_PER_TIER: usize = 8;
/// How many times a get follows a block that moved while it was being read.
const GET_ATTEMPTS: usize = 8;

type Recency = Mutex<LinkedHashMap<BlockId, u64>>;

/// The tiered KV-block store.
pub struct CascadeStore {
    tiers: Vec<Arc<dyn Tier>>,
    index: ShardedIndex<Location>,
    recency: Vec<Recency>,
    stripes: Box<[Mutex<()>]>,
    tier_counters: Vec<TierCounters>,
    counters: StoreCounters,
    policy: StorePolicy,
    hasher: Option<Arc<dyn Hasher>>,
    pool: Option<rayon::ThreadPool>,
}

impl CascadeStore {
    /// A store over `tiers` (fastest first). Blocks already held by the tiers (persistent
    /// tiers reopened) are indexed; where an interrupted move left a block in two tiers,
    /// the faster copy is kept and the slower one removed.
    pub fn new(tiers: Vec<Arc<dyn Tier>>, policy: StorePolicy) -> Result<Self> {
        if tiers.is_empty() {
            return Err(Error::config("a store needs at least one tier"));
        }
        for pair in tiers.windows(2) {
            pair[0].attach_below(&*pair[1])?;
        }
        let pool = match policy.num_io_threads {
            0 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("cascade-io-{i}"))
                    .build()
                    .map_err(|e| Error::config(format!("num_io_threads: {e}")))?,
            ),
        };
        let store = Self {
            recency: tiers
                .iter()
                .map(|_| Mutex::new(LinkedHashMap::new()))
                .collect(),
            tier_counters: tiers.iter().map(|_| TierCounters::default()).collect(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            index: ShardedIndex::new(),
            counters: StoreCounters::default(),
            tiers,
            policy,
            hasher: None,
            pool,
        };
        store.rebuild_index()?;
        Ok(store)
    }

    /// Sets the hasher used by [`CascadeStore::put_content`].
    #[must_use]
    pub fn with_hasher(mut self, hasher: Arc<dyn Hasher>) -> Self {
        self.hasher = Some(hasher);
        self
    }

    /// The hasher for content ids, if one is set.
    pub fn hasher(&self) -> Option<&Arc<dyn Hasher>> {
        self.hasher.as_ref()
    }

    /// The tiers, fastest first.
    pub fn tiers(&self) -> &[Arc<dyn Tier>] {
        &self.tiers
    }

    /// The store policy.
    pub fn policy(&self) -> &StorePolicy {
        &self.policy
    }

    fn rebuild_index(&self) -> Result<()> {
        for (position, tier) in self.tiers.iter().enumerate() {
            for (id, len) in tier.ids() {
                if let Some(existing) = self.index.get(&id) {
                    tracing::info!(%id, kept = existing.tier, dropped = position,
                        "block found in two tiers after an interrupted move; dropping the slower copy");
                    tier.remove(id)?;
                    continue;
                }
                self.adopt(position, id, len);
            }
        }
        Ok(())
    }

    /// Indexes a block a tier already holds (found at open or by a refresh) at `tier`,
    /// as the least recently used there for now.
    fn adopt(&self, tier: usize, id: BlockId, len: u64) {
        self.index.insert(id, Location { tier, len });
        self.track(tier, id, len);
        self.account_add(tier, len);
    }

    /// Asks every tier for blocks that other processes sharing its storage stored or
    /// removed since this store opened (see [`Tier::refresh`]) and updates the index:
    /// - an added block the store does not hold is indexed at that tier;
    /// - an added block the store holds at that tier keeps its place (its length is
    ///   updated when another process replaced it); one held by another tier is left
    ///   as it is, and nothing another process stored is ever removed;
    /// - a removed block is dropped from the index only where the index places it at
    ///   that tier and the tier indeed no longer holds it.
    ///
    /// Errors: the first tier whose refresh fails; tiers before it were applied.
    pub fn refresh(&self) -> Result<RefreshReport> {
        let mut report = RefreshReport::default();
        for (position, tier) in self.tiers.iter().enumerate() {
            let found = tier
                .refresh()
                .map_err(|e| e.with_context("tier", tier.name()))?;
            let mut counts = TierRefreshCounts {
                name: tier.name().to_string(),
                ..TierRefreshCounts::default()
            };
            for (id, _) in found.added {
                let _guard = self.stripe(&id);
                // The tier's answer now, not at its refresh: a put or remove may have
                // come in between.
                let Some(len) = tier.len_of(id) else {
                    continue;
                };
                match self.index.get(&id) {
                    None => {
                        self.adopt(position, id, len);
                        counts.added += 1;
                    }
                    Some(at) if at.tier == position && at.len != len => {
                        self.account_sub(position, at.len);
                        self.adopt(position, id, len);
                        counts.replaced += 1;
                    }
                    Some(_) => {}
                }
            }
            for id in found.removed {
                let _guard = self.stripe(&id);
                let Some(at) = self.index.get(&id) else {
                    continue;
                };
                if at.tier == position && !tier.contains(id) && self.index.remove_if(&id, at) {
                    self.account_sub(position, at.len);
                    self.untrack(position, &id);
                    counts.removed += 1;
                }
            }
            report.added += counts.added;
            report.removed += counts.removed;
            report.tiers.push(counts);
        }
        Ok(report)
    }

    fn run<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(job),
            None => job(),
        }
    }

    fn stripe(&self, id: &BlockId) -> MutexGuard<'_, ()> {
        let value = id.as_u128();
        let folded = (value as u64) ^ ((value >> 64) as u64);
        let slot = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % STRIPES;
        self.stripes[slot].lock()
    }

    fn account_add(&self, tier: usize, len: u64) {
        bump(&self.tier_counters[tier].blocks, 1);
        bump(&self.tier_counters[tier].bytes, len);
    }

    fn account_sub(&self, tier: usize, len: u64) {
        drop_by(&self.tier_counters[tier].blocks, 1);
        drop_by(&self.tier_counters[tier].bytes, len);
    }

    fn touch(&self, tier: usize, id: &BlockId) {
        self.recency[tier].lock().to_back(id);
    }

    fn track(&self, tier: usize, id: BlockId, len: u64) {
        self.recency[tier].lock().insert(id, len);
    }

    fn untrack(&self, tier: usize, id: &BlockId) {
        self.recency[tier].lock().remove(id);
    }

    fn accepts(&self, tier: usize, len: u64) -> bool {
        let t = &self.tiers[tier];
        len <= t.capability().max_block_size && len <= t.capacity()
    }

    fn free_bytes(&self, tier: usize) -> u64 {
        let t = &self.tiers[tier];
        t.capacity().saturating_sub(t.used())
    }

    fn too_large(&self, len: u64) -> Error {
        Error::new(ErrorKind::TooLarge, "no tier can hold a block this large")
            .with_context("block_bytes", len)
            .with_context(
                "largest_accepted",
                self.tiers
                    .iter()
                    .map(|t| t.capability().max_block_size.min(t.capacity()))
                    .max()
                    .unwrap_or(0),
            )
    }

    /// Stores `data` under `id`.
    ///
    /// With dedup on, an id already stored copies nothing and returns
    /// [`PutOutcome::Deduplicated`]; with dedup off it replaces the stored block.
    pub fn put(&self, id: BlockId, data: &[u8]) -> Result<PutOutcome> {
        if let Some(outcome) = self.dedup_hit(&id, data.len()) {
            return Ok(outcome);
        }
        let len = data.len() as u64;
        let mut last_full = None;
        for tier in 0..self.tiers.len() {
            if !self.accepts(tier, len) {
                continue;
            }
            for _ in 0..PUT_ATTEMPTS_PER_TIER {
                if !self.make_room(tier, len)? && self.free_bytes(tier) < len {
                    break;
                }
                let _guard = self.stripe(&id);
                if let Some(outcome) = self.dedup_hit(&id, data.len()) {
                    return Ok(outcome);
                }
                match self.tiers[tier].put(id, data) {
                    Ok(()) => {
                        self.publish(id, tier, len);
                        return Ok(PutOutcome::Stored);
                    }
                    Err(e) if e.kind() == ErrorKind::TierFull => last_full = Some(e),
                    Err(e) if e.kind() == ErrorKind::TooLarge => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last_full.unwrap_or_else(|| self.too_large(len)))
    }

    fn dedup_hit(&self, id: &BlockId, len: usize) -> Option<PutOutcome> {
        if self.policy.dedup && self.index.contains_key(id) {
            bump(&self.counters.dedup_hits, 1);
            bump(&self.counters.dedup_bytes_saved, len as u64);
            Some(PutOutcome::Deduplicated)
        } else {
            None
        }
    }

    /// Records a block just written to `tier`; the caller holds the stripe lock. A copy of
    /// the same id left in another tier (dedup off) is removed after the index moves.
    fn publish(&self, id: BlockId, tier: usize, len: u64) {
        let previous = self.index.insert(id, Location { tier, len });
        if let Some(previous) = previous {
            self.account_sub(previous.tier, previous.len);
            if previous.tier != tier {
                self.untrack(previous.tier, &id);
                if let Err(e) = self.tiers[previous.tier].remove(id) {
                    tracing::warn!(%id, error = %e, "could not remove the replaced copy");
                }
            }
        }
        self.account_add(tier, len);
        self.track(tier, id, len);
        bump(&self.tier_counters[tier].puts, 1);
    }

    /// Moves least recently used blocks out of `tier` until `need` bytes are free.
    /// Returns false when it could not (nothing left to move, or lower tiers refuse).
    fn make_room(&self, tier: usize, need: u64) -> Result<bool> {
        let mut budget = self.index_len_hint(tier) + 4;
        while self.free_bytes(tier) < need {
            if budget == 0 {
                return Ok(false);
            }
            budget -= 1;
            let victim = self.recency[tier].lock().pop_front();
            let Some((victim, len)) = victim else {
                return Ok(false);
            };
            if !self.move_down(tier, victim, len)? {
                self.recency[tier].lock().insert(victim, len);
                self.recency[tier].lock().to_front(&victim);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn index_len_hint(&self, tier: usize) -> usize {
        read(&self.tier_counters[tier].blocks) as usize
    }

    /// Moves `id` from `tier` to the next tier that accepts it, or evicts it from the
    /// last tier. Returns false when the block stays where it is.
    fn move_down(&self, tier: usize, id: BlockId, len: u64) -> Result<bool> {
        let expected = Location { tier, len };
        let target = (tier + 1..self.tiers.len()).find(|&t| self.accepts(t, len));
        let Some(target) = target else {
            return Ok(self.evict(tier, id, expected));
        };
        if !self.make_room(target, len)? {
            return Ok(false);
        }
        let _guard = self.stripe(&id);
        if self.index.get(&id) != Some(expected) {
            // Removed or moved by another thread since it was picked: nothing to do here.
            return Ok(true);
        }
        let source = &self.tiers[tier];
        let moved = self.tiers[target]
            .put_with(id, len as usize, &mut |buf| source.get(id, buf).map(|_| ()));
        match moved {
            Ok(()) => {
                self.index.insert(id, Location { tier: target, len });
                self.account_sub(tier, len);
                self.account_add(target, len);
                self.track(target, id, len);
                if let Err(e) = source.remove(id) {
                    tracing::warn!(%id, error = %e, tier = source.name(), "demoted block not removed from its old tier");
                }
                bump(&self.tier_counters[tier].demotions, 1);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::TierFull => Ok(false),
            Err(e) if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound => {
                // The source copy is unreadable: it cannot be served, so drop it.
                tracing::warn!(%id, error = %e, "dropping an unreadable block during demotion");
                self.forget(id, expected);
                bump(&self.tier_counters[tier].corrupt, 1);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn evict(&self, tier: usize, id: BlockId, expected: Location) -> bool {
        let _guard = self.stripe(&id);
        if self.index.get(&id) != Some(expected) {
            return true;
        }
        self.forget(id, expected);
        bump(&self.tier_counters[tier].evictions, 1);
        true
    }

    /// Drops `id` from the index and its tier; the caller holds the stripe lock.
    fn forget(&self, id: BlockId, at: Location) {
        if self.index.remove_if(&id, at) {
            self.account_sub(at.tier, at.len);
            self.untrack(at.tier, &id);
            if let Err(e) = self.tiers[at.tier].remove(id) {
                tracing::warn!(%id, error = %e, "could not remove a dropped block from its tier");
            }
        }
    }

    /// Copies the block into the start of `out`. Returns `Ok(None)` when it is not stored,
    /// `Ok(Some(len))` when found.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] when `out` is too small (nothing is copied);
    /// [`ErrorKind::Corrupt`] when the stored bytes fail their checksum (the block is
    /// dropped, never served).
    pub fn get(&self, id: BlockId, out: &mut [u8]) -> Result<Option<usize>> {
        for _ in 0..GET_ATTEMPTS {
            let Some(at) = self.index.get(&id) else {
                break;
            };
            if (out.len() as u64) < at.len {
                return Err(crate::tier::buffer_too_small(id, at.len, out.len()));
            }
            match self.tiers[at.tier].get(id, out) {
                Ok(n) => {
                    bump(&self.tier_counters[at.tier].hits, 1);
                    self.touch(at.tier, &id);
                    if self.policy.promote_on_read && at.tier > 0 {
                        self.promote(id, at, &out[..n]);
                    }
                    return Ok(Some(n));
                }
                Err(e) => {
                    if !self.after_failed_read(id, at, e)? {
                        break;
                    }
                }
            }
        }
        bump(&self.counters.misses, 1);
        Ok(None)
    }

    /// What a tier read of `id` at `at` that failed with `error` means for the caller:
    /// `Ok(true)` look again (the block moved between the lookup and the read);
    /// `Ok(false)` the block is gone (the index still pointed at a tier that lost it, e.g.
    /// dropped as corrupt at open), a miss; `Err` fail with the error, after dropping a
    /// block whose bytes failed their checksum.
    fn after_failed_read(&self, id: BlockId, at: Location, error: Error) -> Result<bool> {
        match error.kind() {
            ErrorKind::NotFound => {
                if self.index.get(&id) != Some(at) {
                    return Ok(true);
                }
                let _guard = self.stripe(&id);
                self.forget(id, at);
                Ok(false)
            }
            ErrorKind::Corrupt => {
                let _guard = self.stripe(&id);
                self.forget(id, at);
                bump(&self.tier_counters[at.tier].corrupt, 1);
                Err(error)
            }
            _ => Err(error),
        }
    }

    /// Copies a block just read from a slower tier into the fastest tier that takes it.
    /// Best effort: a failure leaves the block where it was.
    fn promote(&self, id: BlockId, from: Location, bytes: &[u8]) {
        let Some(target) = (0..from.tier).find(|&t| self.accepts(t, from.len)) else {
            return;
        };
        match self.make_room(target, from.len) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(%id, error = %e, "promotion skipped");
                return;
            }
        }
        if let Err(e) = self.move_up(id, from, target, Some(bytes)) {
            tracing::debug!(%id, error = %e, "promotion failed; the block stays where it was");
        }
    }

    /// Copies `id` from `from` into tier `target` (room already made), repoints the index
    /// and removes the old copy. `bytes` are the block's bytes when the caller has them
    /// in host memory; without them the copy is read from the old tier. Returns false
    /// when the block moved or went meanwhile (nothing is done then).
    fn move_up(
        &self,
        id: BlockId,
        from: Location,
        target: usize,
        bytes: Option<&[u8]>,
    ) -> Result<bool> {
        let _guard = self.stripe(&id);
        if self.index.get(&id) != Some(from) {
            return Ok(false);
        }
        let upper = &self.tiers[target];
        let lower = &self.tiers[from.tier];
        match bytes {
            // A device tier registered the pool below with the driver: copying from there
            // is one DMA, while the caller's buffer is pageable and would be staged.
            Some(bytes) if !(upper.capability().device_memory && lower.host_region().is_some()) => {
                upper.put(id, bytes)?;
            }
            _ => lower.get_with(id, &mut |held| upper.put(id, held))?,
        }
        self.index.insert(
            id,
            Location {
                tier: target,
                len: from.len,
            },
        );
        self.account_sub(from.tier, from.len);
        self.untrack(from.tier, &id);
        self.account_add(target, from.len);
        self.track(target, id, from.len);
        if let Err(e) = lower.remove(id) {
            tracing::warn!(%id, error = %e, "promoted block not removed from its old tier");
        }
        bump(&self.tier_counters[target].promotions, 1);
        Ok(true)
    }

    /// The fastest tier holding device memory that accepts a block of `len` bytes.
    fn device_tier(&self, len: u64) -> Result<usize> {
        self.require_device_tier()?;
        (0..self.tiers.len())
            .filter(|&t| self.tiers[t].capability().device_memory)
            .find(|&t| self.accepts(t, len))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::TooLarge,
                    "no GPU tier can hold a block this large",
                )
                .with_context("block_bytes", len)
            })
    }

    /// Fails with [`ErrorKind::Unsupported`] unless some tier holds device memory.
    fn require_device_tier(&self) -> Result<()> {
        if self.tiers.iter().any(|t| t.capability().device_memory) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            "this deployment has no GPU tier: GPU memory can only be stored or read through \
             a tier that holds device memory (configure a `gpu` tier, or pass host memory, \
             e.g. tensor.cpu())",
        )
        .with_context(
            "tiers",
            self.tiers
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(","),
        ))
    }

    /// Stores `len` bytes of device (GPU) memory at `src` under `id`, copied device to
    /// device into the fastest tier that holds device memory; that tier makes room by
    /// demoting its least recently used blocks, as [`CascadeStore::put`] does.
    ///
    /// Dedup as [`CascadeStore::put`]. Errors: [`ErrorKind::Unsupported`] when no tier
    /// holds device memory; [`ErrorKind::TooLarge`] when no such tier can ever hold the
    /// block; [`ErrorKind::TierFull`] when no room could be made.
    ///
    /// # Safety
    /// `[src, src + len)` must be device memory valid for `len` bytes on the GPU tier's
    /// device, and nothing may write it until this returns.
    pub unsafe fn put_device(&self, id: BlockId, src: u64, len: usize) -> Result<PutOutcome> {
        if let Some(outcome) = self.dedup_hit(&id, len) {
            return Ok(outcome);
        }
        let bytes = len as u64;
        let tier = self.device_tier(bytes)?;
        let mut last_full = None;
        for _ in 0..PUT_ATTEMPTS_PER_TIER {
            if !self.make_room(tier, bytes)? && self.free_bytes(tier) < bytes {
                break;
            }
            let _guard = self.stripe(&id);
            if let Some(outcome) = self.dedup_hit(&id, len) {
                return Ok(outcome);
            }
            // SAFETY: the caller's contract is the tier's.
            match unsafe { self.tiers[tier].put_from_device(id, src, len) } {
                Ok(()) => {
                    self.publish(id, tier, bytes);
                    return Ok(PutOutcome::Stored);
                }
                Err(e) if e.kind() == ErrorKind::TierFull => last_full = Some(e),
                Err(e) => return Err(e),
            }
        }
        let t = &self.tiers[tier];
        Err(last_full
            .unwrap_or_else(|| crate::tier::tier_full(t.name(), bytes, t.used(), t.capacity())))
    }

    /// Copies the block into device (GPU) memory of `capacity` bytes at `dst`. Returns
    /// `Ok(None)` when it is not stored, `Ok(Some(len))` when found.
    ///
    /// A block held by a host tier is first promoted into the fastest tier holding
    /// device memory (making room there by demotion), then read device to device.
    ///
    /// Errors: [`ErrorKind::Unsupported`] when no tier holds device memory (also for an
    /// absent block); [`ErrorKind::InvalidInput`] when `capacity` is smaller than the
    /// block (nothing is copied);
    /// [`ErrorKind::TierFull`] / [`ErrorKind::TooLarge`] when a block in a host tier
    /// cannot be promoted into one; [`ErrorKind::Corrupt`] as [`CascadeStore::get`].
    ///
    /// # Safety
    /// `[dst, dst + capacity)` must be device memory valid for `capacity` bytes on the
    /// GPU tier's device, which nothing else reads or writes until this returns.
    pub unsafe fn get_device(
        &self,
        id: BlockId,
        dst: u64,
        capacity: usize,
    ) -> Result<Option<usize>> {
        self.require_device_tier()?;
        // The tier the block was found in, counted as the hit once it is served.
        let mut found_in = None;
        for _ in 0..GET_ATTEMPTS {
            let Some(at) = self.index.get(&id) else {
                break;
            };
            if (capacity as u64) < at.len {
                return Err(crate::tier::buffer_too_small(id, at.len, capacity));
            }
            if !self.tiers[at.tier].capability().device_memory {
                self.promote_to_device(id, at)?;
                found_in.get_or_insert(at.tier);
                continue;
            }
            // SAFETY: the caller's contract is the tier's.
            match unsafe { self.tiers[at.tier].get_into_device(id, dst, capacity) } {
                Ok(n) => {
                    bump(&self.tier_counters[found_in.unwrap_or(at.tier)].hits, 1);
                    self.touch(at.tier, &id);
                    return Ok(Some(n));
                }
                Err(e) => {
                    if !self.after_failed_read(id, at, e)? {
                        break;
                    }
                }
            }
        }
        bump(&self.counters.misses, 1);
        Ok(None)
    }

    /// Moves a block found in a host tier into the fastest device tier, for
    /// [`CascadeStore::get_device`]. Ok also when the block moved or went meanwhile (the
    /// caller looks it up again).
    fn promote_to_device(&self, id: BlockId, at: Location) -> Result<()> {
        let target = self.device_tier(at.len)?;
        if !self.make_room(target, at.len)? && self.free_bytes(target) < at.len {
            let t = &self.tiers[target];
            return Err(Error::new(
                ErrorKind::TierFull,
                "the block is in a host tier and the GPU tier has no room to take it \
                 (read it into host memory with get instead)",
            )
            .with_context("id", id)
            .with_context("held_by", self.tiers[at.tier].name())
            .with_context("tier", t.name())
            .with_context("need_bytes", at.len)
            .with_context("used_bytes", t.used())
            .with_context("capacity_bytes", t.capacity()));
        }
        match self.move_up(id, at, target, None) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The host tier lost the block (e.g. dropped as corrupt at open).
                let _guard = self.stripe(&id);
                self.forget(id, at);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                let _guard = self.stripe(&id);
                self.forget(id, at);
                bump(&self.tier_counters[at.tier].corrupt, 1);
                Err(e)
            }
            Err(e) => Err(e.with_context("promoting_into", self.tiers[target].name())),
        }
    }

    /// Stores many blocks from device memory; items are `(id, device address, length)`,
    /// one result per item, in order.
    ///
    /// When the fastest device tier has room for the whole batch it receives it through
    /// its batch path (one batched DMA on the GPU tier); otherwise blocks are placed one
    /// by one as [`CascadeStore::put_device`] does.
    ///
    /// # Safety
    /// As for [`CascadeStore::put_device`], for every item.
    pub unsafe fn put_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<PutOutcome>> {
        self.run(|| {
            let mut results: Vec<Option<Result<PutOutcome>>> = items
                .iter()
                .map(|&(id, _, len)| self.dedup_hit(&id, len).map(Ok))
                .collect();
            let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            let total: u64 = pending.iter().map(|&i| items[i].2 as u64).sum();
            let largest = pending
                .iter()
                .map(|&i| items[i].2 as u64)
                .max()
                .unwrap_or(0);
            if let Ok(tier) = self.device_tier(largest)
                && !pending.is_empty()
                && self.make_room(tier, total).unwrap_or(false)
            {
                let batch: Vec<(BlockId, u64, usize)> = pending.iter().map(|&i| items[i]).collect();
                // SAFETY: the caller's contract is the tier's.
                let outcomes = unsafe { self.tiers[tier].put_from_device_batch(&batch) };
                for (&i, outcome) in pending.iter().zip(outcomes) {
                    if outcome.is_ok() {
                        let (id, _, len) = items[i];
                        let _guard = self.stripe(&id);
                        self.publish(id, tier, len as u64);
                        results[i] = Some(Ok(PutOutcome::Stored));
                    }
                }
            }
            results
                .into_iter()
                .zip(items)
                .map(|(done, &(id, src, len))| {
                    // SAFETY: the caller's contract covers every item.
                    done.unwrap_or_else(|| unsafe { self.put_device(id, src, len) })
                })
                .collect()
        })
    }

    /// Copies many blocks into device memory; items are `(id, device address,
    /// capacity)`, one result per item, in order (`Ok(None)` for a block not stored).
    /// Blocks already in a device tier go to it in one batch call; the others are
    /// promoted and read one by one as [`CascadeStore::get_device`] does.
    ///
    /// # Safety
    /// As for [`CascadeStore::get_device`], for every item; the ranges must not overlap.
    pub unsafe fn get_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<Option<usize>>> {
        self.run(|| {
            let mut results: Vec<Option<Result<Option<usize>>>> =
                (0..items.len()).map(|_| None).collect();
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.tiers.len()];
            for (i, &(id, _, capacity)) in items.iter().enumerate() {
                match self.index.get(&id) {
                    Some(at) if (capacity as u64) < at.len => {
                        results[i] = Some(Err(crate::tier::buffer_too_small(id, at.len, capacity)));
                    }
                    Some(at) if self.tiers[at.tier].capability().device_memory => {
                        groups[at.tier].push(i);
                    }
                    // Absent or in a host tier: the single-block path counts or promotes.
                    _ => {}
                }
            }
            for (tier, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let batch: Vec<(BlockId, u64, usize)> = members.iter().map(|&i| items[i]).collect();
                // SAFETY: the caller's contract is the tier's.
                let outcomes = unsafe { self.tiers[tier].get_into_device_batch(&batch) };
                for (&i, outcome) in members.iter().zip(outcomes) {
                    if let Ok(n) = outcome {
                        bump(&self.tier_counters[tier].hits, 1);
                        self.touch(tier, &items[i].0);
                        results[i] = Some(Ok(Some(n)));
                    }
                    // Moved, corrupt or failed: the single-block path sorts it out.
                }
            }
            results
                .into_iter()
                .zip(items)
                .map(|(done, &(id, dst, capacity))| {
                    // SAFETY: the caller's contract covers every item.
                    done.unwrap_or_else(|| unsafe { self.get_device(id, dst, capacity) })
                })
                .collect()
        })
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: BlockId) -> bool {
        self.index.contains_key(&id)
    }

    /// The stored length of `id`.
    pub fn len_of(&self, id: BlockId) -> Option<u64> {
        self.index.get(&id).map(|at| at.len)
    }

    /// Which tier (position, fastest first) holds `id`.
    pub fn tier_of(&self, id: BlockId) -> Option<usize> {
        self.index.get(&id).map(|at| at.tier)
    }

    /// Removes `id`; returns whether it was stored.
    pub fn remove(&self, id: BlockId) -> Result<bool> {
        let _guard = self.stripe(&id);
        let Some(at) = self.index.remove(&id) else {
            return Ok(false);
        };
        self.account_sub(at.tier, at.len);
        self.untrack(at.tier, &id);
        self.tiers[at.tier].remove(id)?;
        Ok(true)
    }

    /// How many leading keys of a token-prefix chain are stored: the number of blocks
    /// an engine can load instead of recomputing.
    pub fn lookup_prefix(&self, keys: &[BlockId]) -> usize {
        keys.iter().take_while(|k| self.contains(**k)).count()
    }

    /// Hashes `data` with the configured hasher and stores it under that id.
    pub fn put_content(&self, data: &[u8]) -> Result<(BlockId, PutOutcome)> {
        let hasher = self
            .hasher
            .as_ref()
            .ok_or_else(|| Error::config("this store has no hasher configured"))?;
        let id = hasher.block_id(data);
        self.put(id, data).map(|outcome| (id, outcome))
    }

    /// Stores many blocks in parallel; one result per item, in order.
    ///
    /// When the fastest tier has room for the whole batch it receives it through its own
    /// batch path (batched DMA for the GPU tier); otherwise blocks are placed one by one.
    pub fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<PutOutcome>> {
        self.run(|| {
            let mut results: Vec<Option<Result<PutOutcome>>> = items
                .iter()
                .map(|(id, data)| self.dedup_hit(id, data.len()).map(Ok))
                .collect();
            let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            let total: u64 = pending.iter().map(|&i| items[i].1.len() as u64).sum();
            let all_fit = pending
                .iter()
                .all(|&i| self.accepts(0, items[i].1.len() as u64));
            if !pending.is_empty() && all_fit && self.make_room(0, total).unwrap_or(false) {
                let batch: Vec<(BlockId, &[u8])> = pending.iter().map(|&i| items[i]).collect();
                let outcomes = self.tiers[0].put_batch(&batch);
                for (&i, outcome) in pending.iter().zip(outcomes) {
                    if outcome.is_ok() {
                        let (id, data) = items[i];
                        let _guard = self.stripe(&id);
                        self.publish(id, 0, data.len() as u64);
                        results[i] = Some(Ok(PutOutcome::Stored));
                    }
                }
            }
            results
                .into_par_iter()
                .enumerate()
                .map(|(i, done)| done.unwrap_or_else(|| self.put(items[i].0, items[i].1)))
                .collect()
        })
    }

    /// Reads many blocks in parallel into their buffers; one result per item, in order
    /// (`Ok(None)` for a block not stored). Blocks held by the same tier go to it in one
    /// batch call.
    pub fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<Option<usize>>> {
        self.run(|| {
            let mut results: Vec<Option<Result<Option<usize>>>> = Vec::with_capacity(items.len());
            let mut groups: Vec<Vec<(usize, Location)>> = vec![Vec::new(); self.tiers.len()];
            for (i, (id, out)) in items.iter().enumerate() {
                match self.index.get(id) {
                    Some(at) if (out.len() as u64) >= at.len => {
                        groups[at.tier].push((i, at));
                        results.push(None);
                    }
                    Some(at) => results.push(Some(Err(crate::tier::buffer_too_small(
                        *id,
                        at.len,
                        out.len(),
                    )))),
                    None => {
                        bump(&self.counters.misses, 1);
                        results.push(Some(Ok(None)));
                    }
                }
            }
            let mut slots: Vec<Option<&mut (BlockId, &mut [u8])>> =
                items.iter_mut().map(Some).collect();
            for (tier, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let mut batch: Vec<(BlockId, &mut [u8])> = members
                    .iter()
                    .filter_map(|(i, _)| slots[*i].take().map(|(id, out)| (*id, &mut **out)))
                    .collect();
                let outcomes = self.tiers[tier].get_batch(&mut batch);
                for ((i, at), ((id, out), outcome)) in
                    members.iter().zip(batch.iter().zip(outcomes))
                {
                    results[*i] = match outcome {
                        Ok(n) => {
                            bump(&self.tier_counters[tier].hits, 1);
                            self.touch(tier, id);
                            if self.policy.promote_on_read && tier > 0 {
                                self.promote(*id, *at, &out[..n]);
                            }
                            Some(Ok(Some(n)))
                        }
                        // Moved, corrupt or failed: the single-block path sorts it out.
                        Err(_) => None,
                    };
                }
            }
            results
                .into_iter()
                .zip(items.iter_mut())
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|(done, (id, out))| done.unwrap_or_else(|| self.get(*id, out)))
                .collect()
        })
    }

    /// Counters per tier and in total.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            misses: read(&self.counters.misses),
            dedup_hits: read(&self.counters.dedup_hits),
            dedup_bytes_saved: read(&self.counters.dedup_bytes_saved),
            ..StoreStats::default()
        };
        for (tier, counters) in self.tiers.iter().zip(&self.tier_counters) {
            let t = TierStats {
                name: tier.name().to_string(),
                kind: tier.kind().to_string(),
                capacity_bytes: tier.capacity(),
                used_bytes: tier.used(),
                blocks: read(&counters.blocks),
                bytes: read(&counters.bytes),
                hits: read(&counters.hits),
                puts: read(&counters.puts),
                evictions: read(&counters.evictions),
                demotions: read(&counters.demotions),
                promotions: read(&counters.promotions),
                corrupt: read(&counters.corrupt),
                extra: tier.extra_stats().into_iter().collect(),
            };
            stats.blocks += t.blocks;
            stats.bytes += t.bytes;
            stats.hits += t.hits;
            stats.puts += t.puts;
            stats.evictions += t.evictions + t.corrupt;
            stats.demotions += t.demotions;
            stats.promotions += t.promotions;
            stats.tiers.push(t);
        }
        stats
    }

    /// Removes every block from every tier.
    pub fn clear(&self) -> Result<()> {
        let _guards: Vec<MutexGuard<'_, ()>> = self.stripes.iter().map(|s| s.lock()).collect();
        for (position, tier) in self.tiers.iter().enumerate() {
            tier.clear()?;
            self.recency[position].lock().clear();
            let counters = &self.tier_counters[position];
            counters
                .blocks
                .store(0, std::sync::atomic::Ordering::Relaxed);
            counters
                .bytes
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        self.index.clear_all();
        Ok(())
    }

    /// Makes every tier durable (persistent tiers fsync).
    pub fn flush(&self) -> Result<()> {
        for tier in &self.tiers {
            tier.flush()?;
        }
        Ok(())
    }

    /// Every stored id.
    pub fn ids(&self) -> Vec<BlockId> {
        let mut ids = Vec::with_capacity(self.index.count());
        self.index.for_each(|id, _| ids.push(*id));
        ids
    }
}

impl std::fmt::Debug for CascadeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CascadeStore")
            .field(
                "tiers",
                &self
                    .tiers
                    .iter()
                    .map(|t| t.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("blocks", &self.index.count())
            .finish()
    }
}
