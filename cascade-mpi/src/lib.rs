//! One Cascade across the ranks of an MPI job (`mpirun`, `srun`): a [`ClusterStore`]
//! over each rank's local [`cascade_core::CascadeStore`], with cross-rank dedup and
//! remote reads.
//!
//! - Ownership: every block id has an owner rank, chosen by rendezvous hashing of the id
//!   over the ranks ([`owner_of`]); no central index. The owner records which ranks hold
//!   the block.
//! - Puts store on the calling rank and register with the owner; with dedup on, the
//!   owner answers whether some rank holds the block already, and then nothing is stored.
//! - Gets read locally when they can, else ask the owner and fetch from a holder into
//!   the caller's buffer; a transfer that fails or fails its checksum is a miss.
//! - Transport: two-sided MPI messages served by a progress thread per rank
//!   (`MPI_THREAD_MULTIPLE`); batch calls send one message per peer rank.
//! - Failure: a dead rank ends the MPI job. Relaunched with the same ranks, each rank
//!   reopens its persistent tiers and re-registers their blocks, so every block flushed
//!   before the failure is readable from any rank.
//!
//! Built on rsmpi (the `mpi` crate): Open MPI, MPICH (`MPI_PKG_CONFIG=mpich`) and Cray
//! MPICH (`CRAY_MPICH_DIR`). See docs/cluster.md.
//!
//! ```no_run
//! # fn open_local(c: &cascade_core::CascadeConfig) -> cascade_core::Result<cascade_core::CascadeStore> { unimplemented!() }
//! let mpi = cascade_mpi::Mpi::init()?;
//! let config = cascade_core::CascadeConfig::default();
//! let cluster = cascade_mpi::ClusterStore::open(&mpi, &config, open_local)?;
//! let id = cascade_core::BlockId::from_u128(42);
//! if cluster.rank() == 0 {
//!     cluster.put(id, &[1u8; 4096])?;
//! }
//! cluster.barrier()?;
//! let mut out = vec![0u8; 4096];
//! assert_eq!(cluster.get(id, &mut out)?, Some(4096));
//! cluster.close()?;
//! # Ok::<(), cascade_core::Error>(())
//! ```

mod cluster;
mod comm;
pub mod config;
mod direct;
mod directory;
mod owner;
mod p2p;
mod runtime;
mod server;
mod wire;

pub use cluster::ClusterStore;
pub use direct::DIRECT_READS_ENV;
pub use owner::owner_of;
pub use p2p::{P2pBandwidth, p2p_bandwidth};
pub use runtime::Mpi;

use cascade_core::StoreStats;

/// One rank's counters: its local store's and the cluster-level ones.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ClusterStats {
    /// This rank.
    pub rank: usize,
    /// Ranks in the cluster.
    pub ranks: usize,
    /// Blocks this rank owns (whose holders it records).
    pub owned_blocks: u64,
    /// Blocks this rank read from other ranks.
    pub remote_hits: u64,
    /// Of those, blocks copied straight from the shm pool of a rank on this node.
    pub direct_hits: u64,
    /// Blocks neither this rank nor any other held.
    pub remote_misses: u64,
    /// Bytes this rank read from other ranks.
    pub remote_bytes: u64,
    /// Puts not stored because another rank holds the block.
    pub dedup_hits: u64,
    /// Bytes those puts did not store.
    pub dedup_bytes_saved: u64,
    /// Remote reads that failed or whose bytes failed their checksum (served as misses).
    pub transfer_failures: u64,
    /// Blocks this rank sent to other ranks.
    pub blocks_served: u64,
    /// Bytes this rank sent to other ranks.
    pub bytes_served: u64,
    /// This rank's local store.
    pub local: StoreStats,
}

/// Figures summed over every rank by [`ClusterStore::totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterTotals {
    /// Blocks stored, over all ranks' local stores.
    pub blocks: u64,
    /// Payload bytes stored, over all ranks.
    pub bytes: u64,
    /// Puts that stored nothing (the block was held on this rank or another).
    pub dedup_hits: u64,
    /// Blocks read from another rank.
    pub remote_hits: u64,
    /// Remote reads served as misses because they failed.
    pub transfer_failures: u64,
}

/// The checksum a holder sends with each block and the reader verifies (xxh3-64: about
/// 27 GB/s per core, so it costs little beside the transfer).
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}
