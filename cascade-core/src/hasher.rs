//! The [`Hasher`] trait: content to [`BlockId`]. Implemented in `cascade-hash`.

use crate::BlockId;

/// Turns block content into a [`BlockId`] (for content-addressed dedup).
pub trait Hasher: Send + Sync {
    /// The name used in config (`"sha256"`, `"blake3"`).
    fn name(&self) -> &str;

    /// The id of `data`.
    fn block_id(&self, data: &[u8]) -> BlockId;

    /// Ids of many blocks, in input order. Implementations hash in parallel.
    fn block_ids(&self, blocks: &[&[u8]]) -> Vec<BlockId> {
        blocks.iter().map(|b| self.block_id(b)).collect()
    }
}
