//! Store counters as plain C structs.

use std::ffi::c_char;

use cascade::{StoreStats, TierStats};

use crate::args;
use crate::error::{Failure, guard};
use crate::status::CascadeStatus;
use crate::store::{CascadeHandle, open_store};

/// Bytes of `cascade_tier_stats::name` and `::kind`, with the terminating NUL.
pub const CASCADE_TIER_NAME_LEN: usize = 64;

/// Counters of the whole store.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CascadeStatsC {
    /// Blocks stored, over all tiers.
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
    /// Payload bytes those dedup hits did not copy.
    pub dedup_bytes_saved: u64,
    /// Blocks dropped from the last tier (or dropped as corrupt).
    pub evictions: u64,
    /// Moves to a slower tier.
    pub demotions: u64,
    /// Copies to a faster tier on read.
    pub promotions: u64,
    /// Number of tiers (for `cascade_get_tier_stats`), fastest first.
    pub tier_count: usize,
}

impl From<&StoreStats> for CascadeStatsC {
    fn from(s: &StoreStats) -> Self {
        Self {
            blocks: s.blocks,
            bytes: s.bytes,
            hits: s.hits,
            misses: s.misses,
            puts: s.puts,
            dedup_hits: s.dedup_hits,
            dedup_bytes_saved: s.dedup_bytes_saved,
            evictions: s.evictions,
            demotions: s.demotions,
            promotions: s.promotions,
            tier_count: s.tiers.len(),
        }
    }
}

/// Counters of one tier.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CascadeTierStatsC {
    /// Instance name, NUL-terminated (cut to 63 bytes).
    pub name: [c_char; CASCADE_TIER_NAME_LEN],
    /// Kind (`"gpu"`, `"shm"`, `"file"`, ...), NUL-terminated (cut to 63 bytes).
    pub kind: [c_char; CASCADE_TIER_NAME_LEN],
    /// Bytes the tier may hold.
    pub capacity_bytes: u64,
    /// Bytes allocated to blocks (with the tier's rounding).
    pub used_bytes: u64,
    /// Blocks placed here.
    pub blocks: u64,
    /// Payload bytes of those blocks.
    pub bytes: u64,
    /// Gets served by this tier.
    pub hits: u64,
    /// Puts that landed here.
    pub puts: u64,
    /// Blocks dropped from the store by this tier.
    pub evictions: u64,
    /// Blocks moved from this tier to the next slower one.
    pub demotions: u64,
    /// Blocks copied into this tier from a slower one on read.
    pub promotions: u64,
    /// Blocks dropped because their bytes failed the checksum.
    pub corrupt: u64,
}

fn fixed_text(text: &str) -> [c_char; CASCADE_TIER_NAME_LEN] {
    let mut out = [0 as c_char; CASCADE_TIER_NAME_LEN];
    // Cut on a character boundary so the C string stays valid UTF-8.
    let mut end = text.len().min(CASCADE_TIER_NAME_LEN - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (slot, byte) in out.iter_mut().zip(&text.as_bytes()[..end]) {
        *slot = *byte as c_char;
    }
    out
}

impl From<&TierStats> for CascadeTierStatsC {
    fn from(t: &TierStats) -> Self {
        Self {
            name: fixed_text(&t.name),
            kind: fixed_text(&t.kind),
            capacity_bytes: t.capacity_bytes,
            used_bytes: t.used_bytes,
            blocks: t.blocks,
            bytes: t.bytes,
            hits: t.hits,
            puts: t.puts,
            evictions: t.evictions,
            demotions: t.demotions,
            promotions: t.promotions,
            corrupt: t.corrupt,
        }
    }
}

/// Fills `*out` with the store's counters, summed over its tiers.
///
/// Errors: `INVALID_INPUT` for NULL arguments.
///
/// Thread safety: safe from any number of threads on one handle; counters read while
/// other threads put and get are each current, not a snapshot of one instant.
///
/// # Safety
/// `store` is an open handle; `out` points to a writable `cascade_get_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_stats(
    store: *const CascadeHandle,
    out: *mut CascadeStatsC,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, out) = unsafe { (open_store(store)?, args::out(out, "out")?) };
        out.write((&store.stats()).into());
        Ok(())
    })
}

/// Fills `*out` with the counters of tier `index` (0 is the fastest; see
/// `cascade_stats::tier_count`).
///
/// Errors: `INVALID_INPUT` for NULL arguments or an `index` past the last tier.
///
/// Thread safety: as `cascade_get_stats`.
///
/// # Safety
/// `store` is an open handle; `out` points to a writable `cascade_get_tier_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_tier_stats(
    store: *const CascadeHandle,
    index: usize,
    out: *mut CascadeTierStatsC,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, out) = unsafe { (open_store(store)?, args::out(out, "out")?) };
        let stats = store.stats();
        let tier = stats.tiers.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "tier index {index} is out of range: the store has {} tiers",
                stats.tiers.len()
            ))
        })?;
        out.write(tier.into());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_on_a_character_boundary_and_terminated() {
        let name = "é".repeat(40);
        let fixed = fixed_text(&name);
        assert_eq!(fixed[CASCADE_TIER_NAME_LEN - 1], 0);
        // SAFETY: fixed is NUL-terminated (asserted above).
        let back = unsafe { std::ffi::CStr::from_ptr(fixed.as_ptr()) };
        let back = back.to_str().map_err(|_| "utf-8").expect("utf-8");
        assert_eq!(back, "é".repeat(31));
    }
}
