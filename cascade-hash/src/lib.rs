//! Content hashing for Cascade: block ids from bytes (SHA-256, BLAKE3).
//!
//! `compute_block_id` is exactly the documented one: the first 16 bytes of the SHA-256
//! digest, shown as 32 lowercase hex characters.

use std::sync::Arc;

use cascade_core::config::HasherKind;
use cascade_core::{BlockId, Hasher};
use rayon::prelude::*;
use sha2::Digest;

/// SHA-256 truncated to 128 bits (sha2 picks SHA-NI at run time where the CPU has it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sha256Hasher;

impl Hasher for Sha256Hasher {
    fn name(&self) -> &str {
        "sha256"
    }

    fn block_id(&self, data: &[u8]) -> BlockId {
        let digest = sha2::Sha256::digest(data);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        BlockId::from_bytes(id)
    }

    fn block_ids(&self, blocks: &[&[u8]]) -> Vec<BlockId> {
        blocks.par_iter().map(|b| self.block_id(b)).collect()
    }
}

/// BLAKE3 truncated to 128 bits.
#[derive(Debug, Default, Clone, Copy)]
pub struct Blake3Hasher;

impl Hasher for Blake3Hasher {
    fn name(&self) -> &str {
        "blake3"
    }

    fn block_id(&self, data: &[u8]) -> BlockId {
        let digest = blake3::hash(data);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_bytes()[..16]);
        BlockId::from_bytes(id)
    }

    fn block_ids(&self, blocks: &[&[u8]]) -> Vec<BlockId> {
        blocks.par_iter().map(|b| self.block_id(b)).collect()
    }
}

/// The documented `compute_block_id`: the first 16 bytes of SHA-256 of `data`.
pub fn compute_block_id(data: &[u8]) -> BlockId {
    Sha256Hasher.block_id(data)
}

/// The per-block integrity checksum every tier stores and verifies: xxh3-64, about
/// 27 GB/s per core here, so verifying costs a few percent of a copy.
pub fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// The hasher a config names.
pub fn hasher_for(kind: HasherKind) -> Arc<dyn Hasher> {
    match kind {
        HasherKind::Sha256 => Arc::new(Sha256Hasher),
        HasherKind::Blake3 => Arc::new(Blake3Hasher),
    }
}
