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
//! The crate builds without a CUDA toolkit: cudarc loads `libcuda` at run time. Where the
//! driver is missing, [`GpuTier::open`] returns [`cascade_core::ErrorKind::Unavailable`].

mod ceiling;
mod config;
mod copy;
mod driver;
mod kernel;
mod memory;
mod staging;
mod tier;

pub use ceiling::{PinnedCopyRate, measure_pinned_copy};
pub use config::GpuTierConfig;
pub use driver::driver_present;
pub use tier::{ALIGNMENT, GpuTier, KIND};
