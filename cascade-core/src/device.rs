//! Device memory as the source or destination of a store call, whole or in pieces, and
//! the copies that bring it into (and out of) tiers that hold host memory.
//!
//! Core knows no GPU: the copies are made by a [`DeviceAccess`] the facade hands the
//! store (cascade-gpu's, with the `gpu` feature). Without one, device memory reaches
//! only tiers that hold device memory themselves, and anything else is an
//! [`ErrorKind::Unavailable`] error.

use std::sync::Arc;

use crate::tier::HostRegion;
use crate::{Error, ErrorKind, Result};

/// A range of device memory on one CUDA device. Making one is the only unsafe step of
/// passing device memory to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRegion {
    ptr: u64,
    len: usize,
    device: usize,
}

impl DeviceRegion {
    /// The `len` bytes at unified address `ptr` on CUDA device `device`.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` must be memory that CUDA device `device` can address (device
    /// memory of a CUDA allocation, or pinned host memory), valid for every store call
    /// the region is passed to: readable and not written by anyone else while a put
    /// reads it, and not read or written by anyone else while a get writes it (the
    /// producer's stream synchronized first).
    pub unsafe fn new(ptr: u64, len: usize, device: usize) -> Self {
        Self { ptr, len, device }
    }

    /// The unified address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CUDA device ordinal.
    pub fn device(&self) -> usize {
        self.device
    }
}

/// Where a block's bytes come from: host or device memory, whole or gathered from pieces
/// (concatenated in order; an engine's paged KV cache keeps each layer apart).
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// One host buffer.
    Host(&'a [u8]),
    /// Host buffers, concatenated.
    HostPieces(&'a [&'a [u8]]),
    /// Device ranges of one device, concatenated.
    Device(&'a [DeviceRegion]),
}

impl Source<'_> {
    /// The block's length: the sum of the pieces.
    pub fn len(&self) -> usize {
        match self {
            Source::Host(b) => b.len(),
            Source::HostPieces(p) => p.iter().map(|b| b.len()).sum(),
            Source::Device(r) => r.iter().map(DeviceRegion::len).sum(),
        }
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a block's bytes go: host or device memory, whole or scattered into pieces
/// (filled in order; the block must fit their total length).
#[derive(Debug)]
pub enum Dest<'a> {
    /// One host buffer.
    Host(&'a mut [u8]),
    /// Host buffers, filled in order.
    HostPieces(&'a mut [&'a mut [u8]]),
    /// Device ranges of one device, filled in order.
    Device(&'a [DeviceRegion]),
}

impl Dest<'_> {
    /// Bytes the destination can take.
    pub fn capacity(&self) -> usize {
        match self {
            Dest::Host(b) => b.len(),
            Dest::HostPieces(p) => p.iter().map(|b| b.len()).sum(),
            Dest::Device(r) => r.iter().map(DeviceRegion::len).sum(),
        }
    }
}

/// One DMA between host memory and device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDeviceCopy {
    /// Host address.
    pub host: usize,
    /// Device (unified) address.
    pub device: u64,
    /// Bytes.
    pub len: usize,
}

/// Copies between device memory and host memory for one device (cascade-gpu implements
/// it over the device's shared CUDA context: batched DMA, straight into host memory the
/// driver knows as pinned or registered, through pinned staging buffers otherwise).
pub trait DeviceCopier: Send + Sync {
    /// The CUDA device ordinal.
    fn device(&self) -> usize;

    /// Copies each `device -> host` range; returns once every copy has landed.
    ///
    /// # Safety
    /// Each device range must be valid as [`DeviceRegion::new`] requires; each host
    /// range must be writable host memory that nothing else touches until this returns,
    /// and no two host ranges overlap.
    unsafe fn to_host(&self, copies: &[HostDeviceCopy]) -> Result<()>;

    /// [`DeviceCopier::to_host`] that also answers the XXH3-64 (seed 0, as
    /// `cascade_hash::checksum`) of the bytes that land in each `(host address, length)`
    /// of `blocks`, computed on the device while the copies run, so the host never
    /// reads them back to hash them; `None` for a range it cannot hash there (one that
    /// no single copy, or no run of pieces it gathers on the device, fills). The
    /// default hashes none.
    ///
    /// # Safety
    /// As [`DeviceCopier::to_host`]; the device ranges' bytes must also not change
    /// until this returns.
    unsafe fn to_host_hashed(
        &self,
        copies: &[HostDeviceCopy],
        blocks: &[(usize, usize)],
    ) -> Result<Vec<Option<u64>>> {
        // SAFETY: the caller's contract is to_host's and more.
        unsafe { self.to_host(copies) }?;
        Ok(vec![None; blocks.len()])
    }

    /// Copies each `host -> device` range; returns once every copy has landed.
    ///
    /// # Safety
    /// Each host range must be readable and unchanged until this returns; each device
    /// range must be valid as [`DeviceRegion::new`] requires, and no two overlap.
    unsafe fn to_device(&self, copies: &[HostDeviceCopy]) -> Result<()>;
}

/// The store's way to CUDA: hands out one copier per device, lazily, so a store that
/// never sees device memory never loads the driver.
pub trait DeviceAccess: Send + Sync {
    /// The copier for `device`, with `regions` (the host memory the store's tiers own,
    /// like the shm pool) registered with the driver so copies reach them by DMA. The
    /// copier keeps the registrations until it drops; the store drops it before its
    /// tiers.
    fn copier(&self, device: usize, regions: &[HostRegion]) -> Result<Arc<dyn DeviceCopier>>;
}

/// The error for device memory in a store that has no way to copy it.
pub fn no_device_access() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "device memory cannot be copied here: this build of cascade has no GPU support \
         (the `gpu` feature), and no tier of this store holds device memory",
    )
}

/// The `(host, device, len)` copies that scatter `bytes` over `regions` (a get) or
/// gather `regions` into `bytes` (a put), in order, up to the shorter of the two.
pub fn pair_up(host: usize, host_len: usize, regions: &[DeviceRegion]) -> Vec<HostDeviceCopy> {
    let mut copies = Vec::with_capacity(regions.len());
    let mut offset = 0usize;
    for region in regions {
        if offset >= host_len {
            break;
        }
        let len = region.len().min(host_len - offset);
        if len > 0 {
            copies.push(HostDeviceCopy {
                host: host + offset,
                device: region.ptr(),
                len,
            });
        }
        offset += len;
    }
    copies
}

/// The one device all `regions` are on; an error for regions of several devices.
pub fn device_of(regions: &[DeviceRegion]) -> Result<Option<usize>> {
    let mut device = None;
    for region in regions {
        match device {
            None => device = Some(region.device()),
            Some(d) if d == region.device() => {}
            Some(d) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "the pieces of one block are on different devices",
                )
                .with_context("first_device", d)
                .with_context("other_device", region.device()));
            }
        }
    }
    Ok(device)
}

/// Gathers host pieces into `out` (which is exactly their total length).
pub fn gather(pieces: &[&[u8]], out: &mut [u8]) {
    let mut offset = 0;
    for piece in pieces {
        out[offset..offset + piece.len()].copy_from_slice(piece);
        offset += piece.len();
    }
}

/// Scatters `bytes` over host pieces, in order.
pub fn scatter(bytes: &[u8], pieces: &mut [&mut [u8]]) {
    let mut offset = 0;
    for piece in pieces.iter_mut() {
        if offset >= bytes.len() {
            break;
        }
        let n = piece.len().min(bytes.len() - offset);
        piece[..n].copy_from_slice(&bytes[offset..offset + n]);
        offset += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(ptr: u64, len: usize, device: usize) -> DeviceRegion {
        // SAFETY: never dereferenced; only the arithmetic is tested.
        unsafe { DeviceRegion::new(ptr, len, device) }
    }

    #[test]
    fn pieces_pair_up_in_order_and_stop_at_the_shorter_side() {
        let regions = [
            region(0x1000, 4, 0),
            region(0x9000, 8, 0),
            region(0x5000, 8, 0),
        ];
        let copies = pair_up(100, 10, &regions);
        assert_eq!(
            copies,
            vec![
                HostDeviceCopy {
                    host: 100,
                    device: 0x1000,
                    len: 4
                },
                HostDeviceCopy {
                    host: 104,
                    device: 0x9000,
                    len: 6
                },
            ]
        );
        assert_eq!(device_of(&regions).ok(), Some(Some(0)));
        let mixed = [region(0, 1, 0), region(0, 1, 1)];
        assert_eq!(
            device_of(&mixed).err().map(|e| e.kind()),
            Some(ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn host_pieces_gather_and_scatter() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5];
        let mut joined = [0u8; 5];
        gather(&[&a, &b], &mut joined);
        assert_eq!(joined, [1, 2, 3, 4, 5]);
        let mut x = [0u8; 2];
        let mut y = [0u8; 4];
        scatter(&joined, &mut [&mut x, &mut y]);
        assert_eq!((x, y), ([1, 2], [3, 4, 5, 0]));
    }
}
