//! [`CascadeStore`]: tiers ordered fastest first behind one ledger.
//!
//! Placement (`placement.rs`): a put lands in the fastest tier that can take the block;
//! when that tier is full, its least recently used blocks move down one tier in a batch
//! (recursively), and the last tier evicts. A move copies into the lower tier first, then
//! repoints the ledger, then removes the upper copy, all under the blocks' stripe locks,
//! so a block is never in zero tiers and the ledger never points at a tier that lacks it.
//! Room is made before any stripe lock is taken, and a thread holding several stripe
//! locks took them in ascending order, so moves cannot deadlock.
//!
//! When no room can be made in the fastest tier that accepts a block (its blocks cannot
//! move down: the tier below is full of blocks that cannot move either), the put lands in
//! the next tier that has room. Such a put is counted as `fallback_puts` of the tier it
//! landed in; it is correct (the block is stored and served) but slower to read.
//!
//! Reads (`reads.rs`) are served by the block's tier and may promote the block; batches
//! (`batches.rs`) group blocks by tier and use the tiers' batch paths, and promote what
//! they read in batches too (`promotion.rs`); large demotions run on a few threads
//! (`parallel.rs`); device memory
//! (`device.rs`) goes through the tiers that hold device memory; lending (`lend.rs`) hands
//! blocks to a caller where they lie, without a copy out; `refresh.rs` rebuilds
//! and refreshes the ledger from the tiers; `write_through.rs` writes puts placed in
//! non-persistent tiers to the first persistent tier below.
//!
//! The ledger (`ledger.rs`) is the only owner of the index, the recency order of each
//! tier and the counters.

mod async_get;
mod batches;
mod device;
mod ledger;
mod lend;
mod parallel;
mod placement;
mod prefetch;
mod promotion;
mod reads;
mod refresh;
mod write_through;

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::config::{CascadeConfig, WritePolicy};
use crate::stats::{StoreStats, TierStats, read};
use crate::tier::{SharedFile, SharedPlace, Tier};
use crate::{BlockId, Error, Hasher, Result};

pub use async_get::{ASYNC_GET_THREADS, GetBatchHandle, GetBatchOutput};
pub use prefetch::{PrefetchHandle, PrefetchProgress, PrefetchResult, PrefetchTarget, Prefetched};
pub use refresh::{RefreshReport, TierRefreshCounts};

use ledger::{Entry, Ledger};
use write_through::WriteThrough;

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The bytes were copied into a tier.
    Stored,
    /// The id was already stored; nothing was copied (dedup).
    Deduplicated,
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
    /// See [`CascadeConfig::write_policy`].
    pub write_policy: WritePolicy,
    /// See [`CascadeConfig::max_prefetches`].
    pub max_prefetches: usize,
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
            write_policy: config.write_policy,
            max_prefetches: config.max_prefetches,
        }
    }
}

const STRIPES: usize = 1024;

/// Per-block locks: every change of a block's place (and the tier I/O behind it) runs
/// under the lock of the block's stripe.
pub(crate) struct Stripes(Box<[Mutex<()>]>);

impl Stripes {
    fn new() -> Self {
        Self((0..STRIPES).map(|_| Mutex::new(())).collect())
    }

    fn slot(id: &BlockId) -> usize {
        let value = id.as_u128();
        let folded = (value as u64) ^ ((value >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % STRIPES
    }

    /// The lock of `id`'s stripe.
    pub fn lock(&self, id: &BlockId) -> MutexGuard<'_, ()> {
        self.0[Self::slot(id)].lock()
    }

    /// The locks of all of `ids`' stripes, each once, taken in ascending order.
    pub fn lock_many(&self, ids: impl IntoIterator<Item = BlockId>) -> Vec<MutexGuard<'_, ()>> {
        let mut slots: Vec<usize> = ids.into_iter().map(|id| Self::slot(&id)).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.into_iter().map(|s| self.0[s].lock()).collect()
    }

    /// Every lock, in order.
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, ()>> {
        self.0.iter().map(|s| s.lock()).collect()
    }
}

/// The tiers, the ledger and the locks: what the store's callers and its
/// write-through worker share.
pub(crate) struct Core {
    tiers: Vec<Arc<dyn Tier>>,
    ledger: Ledger,
    stripes: Stripes,
    policy: StorePolicy,
}

/// The tiered KV-block store.
pub struct CascadeStore {
    // Declared (so dropped) before `core`: the copiers' registrations of host memory
    // go before the tiers that own that memory.
    copiers: Mutex<Vec<(usize, Arc<dyn crate::device::DeviceCopier>)>>,
    devices: Option<Arc<dyn crate::device::DeviceAccess>>,
    core: Arc<Core>,
    hasher: Option<Arc<dyn Hasher>>,
    pool: Option<rayon::ThreadPool>,
    writer: Option<WriteThrough>,
    prefetcher: prefetch::Prefetcher,
    /// Put/get latency histograms (metrics); `None` reads no clock.
    latency: Option<crate::metrics::Latency>,
}

impl CascadeStore {
    /// A store over `tiers` (fastest first). Blocks already held by the tiers (persistent
    /// tiers reopened) are indexed; where an interrupted move left a block in two tiers,
    /// the faster copy is kept and the slower one removed (under `write_through`, a
    /// slower copy in a persistent tier is kept as the block's written-through copy).
    pub fn new(tiers: Vec<Arc<dyn Tier>>, policy: StorePolicy) -> Result<Self> {
        if tiers.is_empty() {
            return Err(Error::config("a store needs at least one tier"));
        }
        for pair in tiers.windows(2) {
            pair[0]
                .attach_below(&*pair[1])
                .map_err(|e| e.at("open", pair[0].name()))?;
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
        let write_policy = policy.write_policy;
        let max_prefetches = policy.max_prefetches;
        let core = Arc::new(Core {
            ledger: Ledger::new(tiers.len()),
            stripes: Stripes::new(),
            tiers,
            policy,
        });
        core.rebuild_index()?;
        let writer = match write_policy {
            WritePolicy::WriteBack => None,
            WritePolicy::WriteThrough => Some(WriteThrough::start(Arc::clone(&core))?),
        };
        Ok(Self {
            copiers: Mutex::new(Vec::new()),
            devices: None,
            prefetcher: prefetch::Prefetcher::new(Arc::clone(&core), max_prefetches),
            core,
            hasher: None,
            pool,
            writer,
            latency: Some(crate::metrics::Latency::new()),
        })
    }

    /// Stops recording put/get latency histograms (on by default; they cost two clock
    /// reads and a histogram update per call, see docs/benchmarks.md).
    #[must_use]
    pub fn without_latency_metrics(mut self) -> Self {
        self.latency = None;
        self
    }

    /// Moves the coldest blocks of tier `tier` (position, fastest first) down the tiers,
    /// or out of the store from the last tier, until `bytes` more than now are free
    /// there (`cascade evict`). Returns the bytes freed, which is less when the blocks
    /// left cannot move (the tiers below are full of blocks that cannot move either).
    ///
    /// Errors: [`crate::ErrorKind::InvalidInput`] for a tier that does not exist; a
    /// tier's error while moving a block.
    pub fn free_up(&self, tier: usize, bytes: u64) -> Result<u64> {
        if tier >= self.core.tiers.len() {
            return Err(
                Error::new(crate::ErrorKind::InvalidInput, "no such tier position")
                    .with_context("tier", tier)
                    .with_context("tiers", self.core.tiers.len()),
            );
        }
        let before = self.core.free_bytes(tier);
        let want = before
            .saturating_add(bytes)
            .min(self.core.tiers[tier].capacity());
        self.core.make_room(tier, want)?;
        Ok(self.core.free_bytes(tier).saturating_sub(before))
    }

    /// The put/get latency histograms, unless turned off.
    pub fn latency(&self) -> Option<&crate::metrics::Latency> {
        self.latency.as_ref()
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
        &self.core.tiers
    }

    /// The store policy.
    pub fn policy(&self) -> &StorePolicy {
        &self.core.policy
    }

    /// Runs a batch of `items` items on the store's pool, or on the caller's rayon pool.
    ///
    /// A batch of several items called from a thread outside any rayon pool (a plain
    /// thread of the caller's: C's, OpenMP's, Python's) is handed to one of rayon's
    /// workers as a whole, so that its parallel steps run inline there: called from the
    /// plain thread, each step would be handed to the workers and waited for on its own
    /// (a wake-up each way per step). A single item is run where it is, as its steps do
    /// not split.
    fn run<R: Send>(&self, items: usize, job: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(job),
            None if items > 1 && rayon::current_thread_index().is_none() => rayon::scope(|_| job()),
            None => job(),
        }
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: BlockId) -> bool {
        self.core.ledger.contains(&id)
    }

    /// The stored length of `id`.
    pub fn len_of(&self, id: BlockId) -> Option<u64> {
        self.core.ledger.get(&id).map(|e| e.len)
    }

    /// Which tier (position, fastest first) serves `id`.
    pub fn tier_of(&self, id: BlockId) -> Option<usize> {
        self.core.ledger.get(&id).map(|e| e.tier)
    }

    /// Which persistent tier holds a written-through copy of `id` besides the tier
    /// that serves it (only under `write_through`).
    pub fn copy_tier_of(&self, id: BlockId) -> Option<usize> {
        self.core.ledger.get(&id).and_then(|e| e.backup)
    }

    /// Removes `id` (and its written-through copy); returns whether it was stored.
    pub fn remove(&self, id: BlockId) -> Result<bool> {
        let _guard = self.core.stripes.lock(&id);
        let Some(entry) = self.core.ledger.remove(&id) else {
            return Ok(false);
        };
        let mut first_error = None;
        for tier in std::iter::once(entry.tier).chain(entry.backup) {
            if let Err(e) = self.core.tiers[tier].remove(id) {
                first_error.get_or_insert(e.at("remove", self.core.tiers[tier].name()));
            }
        }
        first_error.map_or(Ok(true), Err)
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

    /// Counters per tier and in total.
    pub fn stats(&self) -> StoreStats {
        let store = self.core.ledger.store_counters();
        let mut stats = StoreStats {
            misses: read(&store.misses),
            dedup_hits: read(&store.dedup_hits),
            dedup_bytes_saved: read(&store.dedup_bytes_saved),
            write_through_failures: read(&store.write_through_failures),
            prefetched: read(&store.prefetched),
            prefetch_hits: read(&store.prefetch_hits),
            prefetch_wasted: read(&store.prefetch_wasted),
            ..StoreStats::default()
        };
        for (position, tier) in self.core.tiers.iter().enumerate() {
            let counters = self.core.ledger.tier_counters(position);
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
                fallback_puts: read(&counters.fallback_puts),
                copies: read(&counters.copies),
                extra: tier.extra_stats().into_iter().collect(),
            };
            stats.blocks += t.blocks;
            stats.bytes += t.bytes;
            stats.hits += t.hits;
            stats.puts += t.puts;
            stats.evictions += t.evictions + t.corrupt;
            stats.demotions += t.demotions;
            stats.promotions += t.promotions;
            stats.fallback_puts += t.fallback_puts;
            stats.tiers.push(t);
        }
        stats
    }

    /// Removes every block from every tier.
    pub fn clear(&self) -> Result<()> {
        let _guards = self.core.stripes.lock_all();
        for tier in &self.core.tiers {
            tier.clear().map_err(|e| e.at("clear", tier.name()))?;
        }
        self.core.ledger.clear();
        Ok(())
    }

    /// Makes every tier durable (persistent tiers fsync). Under `write_through` it
    /// first waits until every earlier put's copy is written, and fails with the first
    /// write-through error since the last flush.
    pub fn flush(&self) -> Result<()> {
        let written = match &self.writer {
            Some(writer) => writer.wait_idle(),
            None => Ok(()),
        };
        for tier in &self.core.tiers {
            tier.flush().map_err(|e| e.at("flush", tier.name()))?;
        }
        written
    }

    /// Every stored id.
    pub fn ids(&self) -> Vec<BlockId> {
        self.core.ledger.ids()
    }

    /// The file of tier `tier` that other processes on this node may map to read its
    /// blocks ([`crate::Tier::shared_file`]); `None` for a tier without one.
    pub fn shared_file(&self, tier: usize) -> Option<SharedFile> {
        self.core.tiers.get(tier)?.shared_file()
    }

    /// For each id, the tier serving it and where the block lies in that tier's
    /// [`CascadeStore::shared_file`], when it has one (`None` otherwise, and for blocks
    /// not held). Each placed block counts as used now, as a read would. The places are
    /// hints for readers in other processes (a cluster rank on the same node), who check
    /// what they copy against the checksum: see [`crate::Tier::shared_places`].
    pub fn shared_places(&self, ids: &[BlockId]) -> Vec<Option<(usize, SharedPlace)>> {
        let mut places = vec![None; ids.len()];
        let mut by_tier: Vec<Vec<usize>> = vec![Vec::new(); self.core.tiers.len()];
        for (i, id) in ids.iter().enumerate() {
            if let Some(at) = self.core.ledger.get(id) {
                by_tier[at.tier].push(i);
            }
        }
        for (tier, members) in by_tier.iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            let wanted: Vec<BlockId> = members.iter().map(|&i| ids[i]).collect();
            let found = self.core.tiers[tier].shared_places(&wanted);
            for (&i, place) in members.iter().zip(found) {
                if let Some(place) = place {
                    self.core.ledger.touch(tier, &ids[i]);
                    places[i] = Some((tier, place));
                }
            }
        }
        places
    }
}

impl Core {
    fn accepts(&self, tier: usize, len: u64) -> bool {
        let t = &self.tiers[tier];
        len <= t.capability().max_block_size && len <= t.capacity()
    }

    fn free_bytes(&self, tier: usize) -> u64 {
        let t = &self.tiers[tier];
        t.capacity().saturating_sub(t.used())
    }

    /// The first persistent tier below `tier` that accepts `len` bytes: where a
    /// write-through copy of a block placed at `tier` goes.
    fn persistent_below(&self, tier: usize, len: u64) -> Option<usize> {
        (tier + 1..self.tiers.len())
            .find(|&t| self.tiers[t].capability().persistent && self.accepts(t, len))
    }

    /// Removes the copies an entry no longer in the ledger had in its tiers, except in
    /// `keep` (where a new put of the id just landed). The caller holds the stripe lock.
    fn discard(&self, id: BlockId, entry: Entry, keep: Option<usize>) {
        for tier in std::iter::once(entry.tier).chain(entry.backup) {
            if Some(tier) == keep {
                continue;
            }
            if let Err(e) = self.tiers[tier].remove(id) {
                tracing::warn!(%id, error = %e, tier = self.tiers[tier].name(),
                    "could not remove a dropped copy");
            }
        }
    }
}

impl Drop for CascadeStore {
    fn drop(&mut self) {
        // Prefetches move blocks between tiers: they stop before anything else goes.
        self.prefetcher.stop();
        // Copies still queued are written before the tiers go (they may be the only
        // copy that survives the process).
        if let Some(writer) = self.writer.take() {
            writer.stop();
        }
    }
}

impl std::fmt::Debug for CascadeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CascadeStore")
            .field(
                "tiers",
                &self
                    .core
                    .tiers
                    .iter()
                    .map(|t| t.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("blocks", &self.core.ledger.count())
            .field("write_policy", &self.core.policy.write_policy)
            .finish()
    }
}
