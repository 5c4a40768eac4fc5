//! Routing: how each buffer outside the tier is reached. Device memory, pinned host
//! memory and registered host memory (the pool of the tier below) go by DMA directly;
//! pageable host memory goes through the pinned staging pool.

use cascade_core::{BlockId, Error, ErrorKind, Result};

use crate::memory::{DeviceRange, HostKind, query_device, query_host};

/// One side of a transfer, outside the tier.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// Host memory: `len` bytes at `ptr` (a block to store, or room to read into).
    Host { ptr: usize, len: usize },
    /// Device memory of any GPU, as a unified address.
    Device { ptr: u64, len: usize },
}

impl Side {
    pub(crate) fn host(ptr: *const u8, len: usize) -> Self {
        Side::Host {
            ptr: ptr as usize,
            len,
        }
    }

    /// `(id, device address, length)` items as device sides.
    pub(crate) fn devices(items: &[(BlockId, u64, usize)]) -> Vec<(BlockId, Side)> {
        items
            .iter()
            .map(|&(id, ptr, len)| (id, Side::Device { ptr, len }))
            .collect()
    }

    pub(crate) fn len(self) -> usize {
        match self {
            Side::Host { len, .. } | Side::Device { len, .. } => len,
        }
    }

    pub(crate) fn addr(self) -> u64 {
        match self {
            Side::Host { ptr, .. } => ptr as u64,
            Side::Device { ptr, .. } => ptr,
        }
    }
}

/// How a buffer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// DMA between host memory the GPU can reach (pinned or registered) and the slab.
    Direct,
    /// Through a pinned staging buffer (pageable host memory).
    Staged,
    /// Device to device, in the copy kernel.
    Device,
}

/// Pinned and device allocations met so far in one call, so that a batch of blocks in
/// one allocation asks the driver once.
pub(crate) struct Router {
    /// The tier's own GPU: only its memory goes through the copy kernel.
    pub(crate) ordinal: i32,
    pub(crate) registered: Vec<(usize, usize)>,
    pub(crate) pinned: Vec<(usize, usize)>,
    pub(crate) device: Vec<DeviceRange>,
}

impl Router {
    pub(crate) fn route(&mut self, side: Side) -> Result<Route> {
        match side {
            Side::Host { len: 0, .. } => Ok(Route::Direct),
            Side::Host { ptr, len } => {
                let inside =
                    |&(start, size): &(usize, usize)| ptr >= start && ptr + len <= start + size;
                if self.registered.iter().any(inside) || self.pinned.iter().any(inside) {
                    return Ok(Route::Direct);
                }
                match query_host(ptr, len) {
                    (HostKind::Pinned, range) => {
                        self.pinned.extend(range);
                        Ok(Route::Direct)
                    }
                    (HostKind::Pageable, _) => Ok(Route::Staged),
                }
            }
            Side::Device { len: 0, .. } => Ok(Route::Device),
            Side::Device { ptr, len } => {
                let known = self.device.iter().find(|r| r.covers(ptr, len)).copied();
                let range = match known.or_else(|| query_device(ptr, len)) {
                    Some(range) => range,
                    None => {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            "address range is not device memory of a CUDA allocation",
                        )
                        .with_context("ptr", format!("{ptr:#x}"))
                        .with_context("bytes", len));
                    }
                };
                if known.is_none() {
                    self.device.push(range);
                }
                // Another GPU's memory is not mapped here: the driver's copies reach it
                // (peer to peer or through the host), the kernel would fault.
                Ok(if range.ordinal == self.ordinal {
                    Route::Device
                } else {
                    Route::Direct
                })
            }
        }
    }
}
