//! Cascade: a hierarchical KV-cache store for LLM inference.
//!
//! Blocks of attention keys and values live in tiers ordered fastest first (GPU HBM,
//! `/dev/shm`, a parallel file system, or plugins), behind one sharded index, optionally
//! named by their content so identical blocks are stored once.
//!
//! ```no_run
//! let store = cascade::Cascade::open_default()?;
//! let block = vec![7u8; 128 * 1024];
//! let id = cascade::compute_block_id(&block);
//! store.put(id, &block)?;
//! let mut out = vec![0u8; block.len()];
//! assert_eq!(store.get(id, &mut out)?, Some(block.len()));
//! # Ok::<(), cascade::Error>(())
//! ```
//!
//! Which tiers a build knows is chosen by cargo features: `shm`, `lustre`, `gpu`,
//! `plugins` (see [`TierRegistry::builtin`]).

#[cfg(feature = "metrics-http")]
pub mod metrics_server;
pub mod registry;

use std::path::Path;
use std::sync::Arc;

pub use cascade_core::{
    self as core, BlockId, Capability, CascadeConfig, CascadeStore, Error, ErrorKind, Hasher,
    MemoryTier, MemoryTierConfig, PutOutcome, RefreshReport, Result, StoreStats, Tier, TierConfig,
    TierRefresh, TierRefreshCounts, TierStats,
    config::{ByteSize, HasherKind, WritePolicy},
    device::{Dest, DeviceRegion, Source},
    store::StorePolicy,
};
/// The GPU tier's own API (device-pointer I/O, the measured PCIe ceiling, ...).
#[cfg(feature = "gpu")]
pub use cascade_gpu as gpu;
pub use cascade_hash::{self as hash, compute_block_id};
/// The file tier's own API (`FileTier::drop_page_cache`, `compact`, `open_report`, ...).
#[cfg(feature = "lustre")]
pub use cascade_lustre as lustre;
/// The cluster store over MPI (`ClusterStore`, `Mpi`, ...): feature `mpi`.
#[cfg(feature = "mpi")]
pub use cascade_mpi as mpi;
#[cfg(feature = "metrics-http")]
pub use metrics_server::MetricsServer;
pub use registry::TierRegistry;

/// The embedded default deployment (`cascade.toml` at the repository root).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../cascade.toml");

#[cfg(feature = "metrics-http")]
fn serve_metrics(addr: &str, store: &Arc<CascadeStore>) -> Result<()> {
    MetricsServer::start(addr, Arc::downgrade(store))?.detach();
    Ok(())
}

#[cfg(not(feature = "metrics-http"))]
fn serve_metrics(addr: &str, _store: &Arc<CascadeStore>) -> Result<()> {
    Err(Error::config(
        "metrics_listen: this build cannot serve metrics over HTTP (cargo feature metrics-http)",
    )
    .with_context("metrics_listen", addr))
}

/// Entry points that build a [`CascadeStore`] from configuration.
pub struct Cascade;

impl Cascade {
    /// Opens a store from a typed config with the tiers this build knows.
    ///
    /// A config with `metrics_listen` is refused ([`ErrorKind::Config`]): serving the
    /// store's metrics needs a shared store, from [`Cascade::open_shared`].
    pub fn open(config: &CascadeConfig) -> Result<CascadeStore> {
        Self::open_with_registry(config, &TierRegistry::builtin())
    }

    /// Opens a store shared between threads and, when the config has `metrics_listen`,
    /// serves its metrics there for as long as the store is open (a port that cannot be
    /// listened on fails the open).
    pub fn open_shared(config: &CascadeConfig) -> Result<Arc<CascadeStore>> {
        let store = Arc::new(Self::open_store(config, &TierRegistry::builtin())?);
        if let Some(addr) = &config.metrics_listen {
            serve_metrics(addr, &store)?;
        }
        Ok(store)
    }

    /// Opens a store using `registry` to build the tiers (for extra in-process kinds).
    /// `metrics_listen` is refused as by [`Cascade::open`].
    pub fn open_with_registry(
        config: &CascadeConfig,
        registry: &TierRegistry,
    ) -> Result<CascadeStore> {
        if let Some(addr) = &config.metrics_listen {
            return Err(Error::config(
                "metrics_listen: a store serves its metrics only when opened shared \
                 (Cascade::open_shared; Python's CascadeStore and the cascade command do); \
                 render them with CascadeStore::metrics_text instead",
            )
            .with_context("metrics_listen", addr));
        }
        Self::open_store(config, registry)
    }

    fn open_store(config: &CascadeConfig, registry: &TierRegistry) -> Result<CascadeStore> {
        config.validate()?;
        let mut tiers: Vec<Arc<dyn Tier>> = Vec::with_capacity(config.tiers.len());
        for (position, tier_config) in config.tiers.iter().enumerate() {
            match registry.open(position, tier_config) {
                Ok(tier) => tiers.push(tier),
                Err(e) if e.kind() == ErrorKind::Unavailable && !tier_config.required => {
                    tracing::warn!(
                        tier = %tier_config.display_name(position),
                        kind = %tier_config.kind,
                        error = %e,
                        "tier unavailable on this machine; continuing without it (required = false)"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        if tiers.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "none of the configured tiers is available on this machine",
            ));
        }
        let store = CascadeStore::new(tiers, StorePolicy::from(config))?;
        // Device memory into every tier: cascade-gpu's shared CUDA context, loaded only
        // when device memory first arrives (a store never given any never loads libcuda).
        #[cfg(feature = "gpu")]
        let store = store.with_device_access(cascade_gpu::device_access());
        Ok(store.with_hasher(hash::hasher_for(config.hasher)))
    }

    /// Opens a store from a TOML document.
    pub fn open_toml_str(text: &str) -> Result<CascadeStore> {
        Self::open(&CascadeConfig::from_toml_str(text)?)
    }

    /// Opens a store from a TOML file.
    pub fn open_toml_file(path: impl AsRef<Path>) -> Result<CascadeStore> {
        Self::open(&CascadeConfig::from_toml_file(path)?)
    }

    /// The embedded default deployment, parsed.
    pub fn default_config() -> Result<CascadeConfig> {
        CascadeConfig::from_toml_str(DEFAULT_CONFIG_TOML)
    }

    /// Opens the embedded default deployment. It needs no root, no GPU and no server.
    pub fn open_default() -> Result<CascadeStore> {
        Self::open(&Self::default_config()?)
    }

    /// Opens this rank's part of a store across every rank of the MPI job (collective:
    /// every rank calls it), initialising MPI with `MPI_THREAD_MULTIPLE` or joining the
    /// MPI the caller initialised. Each rank opens `config` with `{rank}` in tier
    /// settings replaced by its rank (see docs/cluster.md).
    #[cfg(feature = "mpi")]
    pub fn open_cluster(config: &CascadeConfig) -> Result<mpi::ClusterStore> {
        let runtime = mpi::Mpi::init()?;
        mpi::ClusterStore::open(&runtime, config, Self::open)
    }
}
