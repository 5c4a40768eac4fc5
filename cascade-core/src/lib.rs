//! Core of Cascade, the hierarchical KV-cache store.
//!
//! This crate knows no concrete storage device. It defines what every tier must do
//! ([`Tier`]), how blocks are named ([`BlockId`]) and found ([`Index`], [`ShardedIndex`]),
//! how content becomes an id ([`Hasher`]), and the [`CascadeStore`] that places blocks
//! in tiers ordered fastest first, demotes the least recently used ones when a tier
//! fills, and promotes them back on reads. The process-heap [`MemoryTier`] lives here so
//! the store is usable and testable without `/dev/shm`.

pub mod access;
pub mod alloc;
pub mod block_id;
pub mod config;
pub mod device;
pub mod error;
pub mod hasher;
pub mod index;
pub mod kind;
pub mod memory;
pub mod metrics;
#[cfg(feature = "plugins")]
pub mod plugin;
pub mod require;
pub mod stats;
pub mod store;
pub mod tier;

#[cfg(feature = "test-utils")]
pub mod conformance;

pub use access::{Access, FileMode};
pub use alloc::{Extent, ExtentAllocator};
pub use block_id::BlockId;
pub use config::{CascadeConfig, TierConfig, WritePolicy};
pub use error::{Error, ErrorKind, Result};
pub use hasher::Hasher;
pub use index::{Index, Location, ShardedIndex};
pub use kind::{KindConfig, TierKind};
pub use memory::{MemoryTier, MemoryTierConfig};
pub use stats::{StoreStats, TierStats};
pub use store::{
    CascadeStore, GetBatchHandle, GetBatchOutput, PrefetchHandle, PrefetchProgress, PrefetchResult,
    PrefetchTarget, Prefetched, PutOutcome, RefreshReport, TierRefreshCounts,
};
pub use tier::{Capability, Tier, TierRefresh};
