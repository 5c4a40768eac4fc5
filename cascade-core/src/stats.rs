//! Counters of a store, per tier and in total, as serde structs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Figures of one tier.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TierStats {
    /// Instance name.
    pub name: String,
    /// Kind string.
    pub kind: String,
    /// Bytes the tier may hold.
    pub capacity_bytes: u64,
    /// Bytes allocated to blocks (with the tier's rounding).
    pub used_bytes: u64,
    /// Blocks the index places here.
    pub blocks: u64,
    /// Payload bytes of those blocks.
    pub bytes: u64,
    /// Gets served by this tier.
    pub hits: u64,
    /// Puts that landed here.
    pub puts: u64,
    /// Blocks dropped from the store by this tier (the last tier's policy, or damage).
    pub evictions: u64,
    /// Blocks moved from this tier to the next slower one.
    pub demotions: u64,
    /// Blocks copied into this tier from a slower one on read.
    pub promotions: u64,
    /// Blocks dropped because their bytes failed the checksum.
    pub corrupt: u64,
    /// Puts that landed here although a faster tier accepts blocks of their size,
    /// because no room could be made there in time (its blocks could not move down).
    pub fallback_puts: u64,
    /// Write-through copies held here of blocks that a faster tier serves.
    pub copies: u64,
    /// Tier-specific figures (fragmentation, segments, ...).
    pub extra: BTreeMap<String, f64>,
}

/// Figures of the whole store.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StoreStats {
    /// Blocks stored (over all tiers).
    pub blocks: u64,
    /// Payload bytes stored.
    pub bytes: u64,
    /// Gets that found their block.
    pub hits: u64,
    /// Gets that did not.
    pub misses: u64,
    /// Puts that stored new bytes.
    pub puts: u64,
    /// Puts of an id already stored, which copied nothing.
    pub dedup_hits: u64,
    /// Payload bytes that dedup hits did not copy.
    pub dedup_bytes_saved: u64,
    /// Blocks dropped from the last tier (or dropped as corrupt).
    pub evictions: u64,
    /// Moves to a slower tier.
    pub demotions: u64,
    /// Copies to a faster tier on read.
    pub promotions: u64,
    /// Puts that landed in a slower tier than the fastest one accepting their size
    /// (sum of the tiers' `fallback_puts`).
    pub fallback_puts: u64,
    /// Write-through copies that could not be written (each leaves its block in a
    /// non-persistent tier only; the next flush reports the first such error).
    pub write_through_failures: u64,
    /// Blocks a prefetch moved into a faster tier.
    pub prefetched: u64,
    /// Gets served by a prefetched block from the tier the prefetch moved it to, the
    /// first time it was read there.
    pub prefetch_hits: u64,
    /// Prefetched blocks that left the tier the prefetch moved them to (demoted,
    /// evicted, removed, replaced, cleared) before any get read them there.
    pub prefetch_wasted: u64,
    /// Per tier, fastest first.
    pub tiers: Vec<TierStats>,
}

/// Live counters of one tier.
#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    pub blocks: AtomicU64,
    pub bytes: AtomicU64,
    pub hits: AtomicU64,
    pub puts: AtomicU64,
    pub evictions: AtomicU64,
    pub demotions: AtomicU64,
    pub promotions: AtomicU64,
    pub corrupt: AtomicU64,
    pub fallback_puts: AtomicU64,
    pub copies: AtomicU64,
}

/// Live store-wide counters that are not sums over tiers.
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    pub misses: AtomicU64,
    pub dedup_hits: AtomicU64,
    pub dedup_bytes_saved: AtomicU64,
    pub write_through_failures: AtomicU64,
    pub prefetched: AtomicU64,
    pub prefetch_hits: AtomicU64,
    pub prefetch_wasted: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

pub(crate) fn drop_by(counter: &AtomicU64, by: u64) {
    // Saturating: a reset by clear() may race with an in-flight decrement.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(by))
    });
}

pub(crate) fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
