//! GPU HBM tier of Cascade: blocks in device memory, moved over PCIe with CUDA.
//!
//! - One device slab is allocated when the tier opens and carved into blocks by
//!   [`cascade_core::ExtentAllocator`] (256-byte alignment); no `cuMemAlloc` per put.
//! - Copies are issued in groups through `cuMemcpyBatchAsync`, rotated over several
//!   streams, and awaited through one event per group; nothing synchronizes per block.
//! - Device memory, pinned host memory and the registered host memory of the tier below
//!   (the shm pool) are copied by DMA directly; pageable memory goes through a pool of
//!   pinned staging buffers that a crew of threads fills and empties.
//! - [`GpuTier::put_from_device`] and [`GpuTier::get_into_device`] (and their batch
//!   forms) move KV blocks that an engine already holds on a GPU.
//!
//! - [`DeviceContext`] is the CUDA context of one device, shared by the GPU tier and by
//!   [`HostCopier`], through which a store ([`device_access`]) moves device memory into
//!   and out of host tiers (the shm pool registered with CUDA, batched DMA).
//!
//! The crate builds without a CUDA toolkit: cudarc loads `libcuda` at run time. Where the
//! driver is missing, [`GpuTier::open`] returns [`cascade_core::ErrorKind::Unavailable`].

mod ceiling;
mod checksum;
mod chunker;
mod config;
mod copy;
mod dma;
mod download;
mod driver;
mod gathered;
mod group;
mod hub;
mod kernel;
mod memory;
mod pieces;
mod results;
mod route;
mod slot;
mod staging;
mod tier;
mod upload;

pub use ceiling::{PinnedCopyRate, measure_pinned_copy};
pub use checksum::{ChecksumKernel, PendingChecksums};
pub use config::GpuTierConfig;
pub use driver::driver_present;
pub use hub::{DeviceContext, HostCopier, device_access};
pub use tier::{ALIGNMENT, GpuTier, KIND};

/// `kind = "gpu"` in a `[[tiers]]` entry.
impl cascade_core::TierKind for GpuTier {
    const KIND: &'static str = KIND;
    type Config = GpuTierConfig;

    fn open_kind(name: String, config: &GpuTierConfig) -> cascade_core::Result<Self> {
        Self::open(name, config)
    }
}
