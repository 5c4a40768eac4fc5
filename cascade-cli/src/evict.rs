//! `cascade evict`: frees bytes in one tier by moving its coldest blocks down.

use cascade::Result;
use serde::Serialize;

use crate::deployment::Deployment;
use crate::output::{Report, size, table};

/// What `cascade evict` prints.
#[derive(Debug, Serialize)]
pub struct Eviction {
    /// The tier.
    pub tier: String,
    /// Bytes asked for.
    pub requested_bytes: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Blocks the tier held before and after.
    pub blocks_before: u64,
    /// See `blocks_before`.
    pub blocks_after: u64,
    /// Blocks that left the store (evicted from the last tier).
    pub dropped_blocks: u64,
}

/// Frees `bytes` in `tier` (name or position), then makes the result durable.
pub fn run(deployment: &Deployment, tier: &str, bytes: u64) -> Result<Eviction> {
    let position = deployment.tier_position(tier)?;
    let store = &deployment.store;
    let before = store.stats();
    let freed = store.free_up(position, bytes)?;
    store.flush()?;
    let after = store.stats();
    Ok(Eviction {
        tier: store.tiers()[position].name().to_string(),
        requested_bytes: bytes,
        freed_bytes: freed,
        blocks_before: before.tiers[position].blocks,
        blocks_after: after.tiers[position].blocks,
        dropped_blocks: before.blocks.saturating_sub(after.blocks),
    })
}

impl Report for Eviction {
    fn text(&self) -> String {
        let mut rows = table(&[
            "tier",
            "asked",
            "freed",
            "blocks before",
            "blocks after",
            "left the store",
        ]);
        rows.add_row(vec![
            self.tier.clone(),
            size(self.requested_bytes),
            size(self.freed_bytes),
            self.blocks_before.to_string(),
            self.blocks_after.to_string(),
            self.dropped_blocks.to_string(),
        ]);
        let mut text = format!("{rows}\n");
        if self.freed_bytes < self.requested_bytes {
            text.push_str("less was freed than asked: the tier is emptied, or the blocks left cannot move down\n");
        }
        text
    }
}
