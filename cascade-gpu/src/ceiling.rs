//! The PCIe ceiling of this machine, measured: one large pinned copy each way.
//!
//! Efficiency figures of the GPU tier are computed against this, measured in the same
//! run, never against a datasheet number.

use std::time::Instant;

use cascade_core::{Error, ErrorKind, Result};
use cudarc::driver::sys;

use crate::driver::{check, cuda_error, open_context};
use crate::memory::{DeviceSlab, PinnedBuffer};

/// Host-to-device and device-to-host GB/s (1e9 bytes/s) of one pinned copy each way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PinnedCopyRate {
    /// Pinned host memory to device memory.
    pub host_to_device_gbps: f64,
    /// Device memory to pinned host memory.
    pub device_to_host_gbps: f64,
}

/// Copies `bytes` (e.g. 1 GiB) from pinned host memory to the device and back on
/// `device_id`, `rounds` times, and returns the median rate of each direction. The
/// buffers are allocated and touched once, before timing; the round trip is checked to
/// return the bytes sent.
///
/// Errors: [`ErrorKind::Unavailable`] without a driver or device; [`ErrorKind::InvalidInput`]
/// for zero bytes or rounds.
pub fn measure_pinned_copy(
    device_id: usize,
    bytes: usize,
    rounds: usize,
) -> Result<PinnedCopyRate> {
    if bytes == 0 || rounds == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the pinned-copy ceiling needs a non-zero size and number of rounds",
        ));
    }
    let ctx = open_context(device_id)?;
    let source = PinnedBuffer::new(&ctx, bytes)?;
    let back = PinnedBuffer::new(&ctx, bytes)?;
    let device = DeviceSlab::new(&ctx, bytes)?;
    // SAFETY: `source` holds `bytes` bytes owned here; nothing else touches it yet.
    let pattern = unsafe { std::slice::from_raw_parts_mut(source.ptr(), bytes) };
    for (i, byte) in pattern.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let stream = ctx
        .new_stream()
        .map_err(|e| cuda_error("cuStreamCreate", e))?;
    let mut up = Vec::with_capacity(rounds);
    let mut down = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        // SAFETY: pinned source and device destination both hold `bytes` bytes and live
        // until the synchronize below returns.
        check("cuMemcpyHtoDAsync", unsafe {
            sys::cuMemcpyHtoDAsync_v2(device.ptr(), source.ptr().cast(), bytes, stream.cu_stream())
        })?;
        stream
            .synchronize()
            .map_err(|e| cuda_error("cuStreamSynchronize", e))?;
        up.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        // SAFETY: device source and pinned destination both hold `bytes` bytes and live
        // until the synchronize below returns.
        check("cuMemcpyDtoHAsync", unsafe {
            sys::cuMemcpyDtoHAsync_v2(back.ptr().cast(), device.ptr(), bytes, stream.cu_stream())
        })?;
        stream
            .synchronize()
            .map_err(|e| cuda_error("cuStreamSynchronize", e))?;
        down.push(start.elapsed().as_secs_f64());
    }
    // SAFETY: both buffers hold `bytes` bytes; every copy into them has completed.
    let (sent, received) = unsafe {
        (
            std::slice::from_raw_parts(source.ptr(), bytes),
            std::slice::from_raw_parts(back.ptr(), bytes),
        )
    };
    if sent != received {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "the pinned round trip returned different bytes",
        ));
    }
    let rate = |mut secs: Vec<f64>| {
        secs.sort_by(f64::total_cmp);
        bytes as f64 / secs[secs.len() / 2] / 1e9
    };
    Ok(PinnedCopyRate {
        host_to_device_gbps: rate(up),
        device_to_host_gbps: rate(down),
    })
}
