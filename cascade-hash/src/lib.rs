//! Hashing for Cascade: block ids from content, per-block checksums, and token-prefix
//! keys.
//!
//! Two ways to name a KV block:
//! - by content ([`compute_block_id`], [`Sha256Hasher`], [`Blake3Hasher`]): identical
//!   blocks get identical ids, so the store keeps one copy across sessions (dedup);
//! - by token prefix ([`prefix_keys`]): an engine knows the tokens before the KV exists,
//!   so it can ask [`CascadeStore::lookup_prefix`](cascade_core::CascadeStore::lookup_prefix)
//!   how many leading blocks it may load instead of recomputing them.
//!
//! The persistent tiers (shm, file, the Redis plugin) store [`checksum`] beside each
//! block and check it on reopen or on read; [`copy_with_checksum`] computes it and copies
//! a block into a tier's buffer in one call (hash, then copy: see its docs for why not
//! one pass).
//! Many blocks are hashed in parallel by [`hash_batch`] (rayon), ids in input order.

mod batch;
mod checksum;
mod hashers;
mod prefix;

pub use batch::{checksum_batch, hash_batch};
pub use checksum::{checksum, copy_with_checksum};
pub use hashers::{Blake3Hasher, Sha256Hasher, compute_block_id, hasher_for, sha_ni_detected};
pub use prefix::{
    PREFIX_KEY_CONTEXT, PrefixKeyer, PrefixNamespace, Token, prefix_key, prefix_keys,
};
