//! Core of Cascade, the hierarchical KV-cache store.
//!
//! This crate knows no concrete storage device. It defines what every tier must do
//! ([`Tier`]), how blocks are named ([`BlockId`]) and found ([`Index`], [`ShardedIndex`]),
//! how content becomes an id ([`Hasher`]), and the [`CascadeStore`] that places blocks
//! in tiers ordered fastest first, demotes the least recently used ones when a tier
//! fills, and promotes them back on reads. The process-heap [`MemoryTier`] lives here so
//! the store is usable and testable without `/dev/shm`.
//!
//! # The shape of a tier crate
//!
//! Every tier in the workspace is built the same way, so an author (of a built-in tier
//! or of a plugin) finds each part where the others keep it:
//!
//! - `lib.rs`: the crate docs (format, guarantees, where its figures are), the `KIND`
//!   string and the one [`TierKind`] impl that registers the tier (its kind and aliases,
//!   its typed settings, its constructor); the facade's registry needs nothing else.
//! - `config.rs`: the typed settings, `#[serde(deny_unknown_fields, default)]`, every
//!   default written in its field's doc comment, checked once by a `validate()` before
//!   anything is opened.
//! - `tier.rs`: the tier's state and its [`Tier`] impl, thin: each method checks its
//!   input and hands the work to the file whose job it is. Its [`Capability`] states
//!   what the tier does (persistent, device memory and which device, shared, refresh,
//!   batch-native, largest block), starting from [`Capability::default`].
//! - one file per job, each depending only on the files below it (no two files import
//!   each other): recovery on open (`recover.rs`), allocation (`slots.rs`, `slot.rs`),
//!   the on-disk or in-memory format (`layout.rs`, `format.rs`), I/O or copies in each
//!   direction (`upload.rs`, `download.rs`, `io.rs`), background work (`commit.rs`,
//!   `compact.rs`), and the rules that must hold in one place only (`deletes.rs`).
//!   `cascade-shm` (`recover`, `slots`, `commit`), `cascade-lustre` (`directory`,
//!   `recover`, `deletes`, `segment`, `store`, `compact`, `refresh`) and `cascade-gpu`
//!   (`route`, `upload`, `download`, `chunker`, `group`, `slot`) follow it.
//! - `tests/conformance.rs`: `conformance_tests!` (feature `test-utils`) over a `Subject` (with a peer opener
//!   for shared storage), one test per behaviour; hardware or servers that may be absent
//!   are skipped through [`require::skip`], so `CASCADE_REQUIRE` can turn the skip into a
//!   failure where they must be present.
//! - `benches/`: criterion benches of the tier's own paths, each figure in
//!   `docs/benchmarks.md` with its command.

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
pub use tier::{Capability, SharedFile, SharedPlace, Tier, TierRefresh};
