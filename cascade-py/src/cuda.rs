//! Stream synchronization for device memory handed in by other CUDA users (PyTorch,
//! CuPy, Numba): their kernels may still be writing a tensor when it is passed to
//! Cascade, whose copies run on the GPU tier's own streams.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, sys};

use cascade::{BlockId, Error, ErrorKind, Result};

use crate::data::DeviceRange;

/// Primary contexts retained per device (the same context PyTorch uses), kept for the
/// life of the process so a sync costs no context setup.
static CONTEXTS: Mutex<Vec<(usize, Arc<CudaContext>)>> = Mutex::new(Vec::new());

fn context(device_id: usize) -> Result<Arc<CudaContext>> {
    let mut contexts = CONTEXTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, ctx)) = contexts.iter().find(|(d, _)| *d == device_id) {
        return Ok(ctx.clone());
    }
    if !cascade_gpu::driver_present() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "no CUDA driver: libcuda.so could not be loaded",
        ));
    }
    let ctx = CudaContext::new(device_id).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot retain the CUDA context of device {device_id}: {e}"),
        )
    })?;
    contexts.push((device_id, ctx.clone()));
    Ok(ctx)
}

/// Waits until all work queued on `stream` (a CUDA stream handle; 1 and 2 are the legacy
/// and per-thread default streams) on `device_id` has finished.
pub fn synchronize(device_id: usize, stream: u64) -> Result<()> {
    let ctx = context(device_id)?;
    ctx.bind_to_thread()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot bind the CUDA context: {e}")))?;
    // SAFETY: the handle comes from the tensor's producer, which names one of its live
    // streams or a default-stream constant; the context it belongs to is current.
    let status = unsafe { sys::cuStreamSynchronize(stream as usize as sys::CUstream) };
    if status == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Io,
            format!("cuStreamSynchronize failed: {status:?}"),
        ))
    }
}

/// Runs `copy` on the (id, device address, length) of each of `items` once every
/// distinct producer stream has been synchronized on `device_id`; a failed
/// synchronization fails every item and copies nothing. With no device (a store without
/// a GPU tier) nothing is synchronized and `copy` refuses the ranges itself.
pub fn copy_after_sync<R>(
    device_id: Option<usize>,
    items: &[(BlockId, DeviceRange)],
    copy: impl FnOnce(&[(BlockId, u64, usize)]) -> Vec<Result<R>>,
) -> Vec<Result<R>> {
    let plain: Vec<(BlockId, u64, usize)> =
        items.iter().map(|(id, d)| (*id, d.ptr, d.len)).collect();
    if let Some(device_id) = device_id
        && let Err(e) = sync_streams(device_id, items)
    {
        return plain.iter().map(|_| Err(e.clone())).collect();
    }
    copy(&plain)
}

/// Synchronizes each distinct producer stream of `items` once.
fn sync_streams(device_id: usize, items: &[(BlockId, DeviceRange)]) -> Result<()> {
    sync_ranges(device_id, items.iter().map(|(_, d)| d))
}

/// Synchronizes each distinct producer stream of `ranges` once.
pub fn sync_ranges<'a>(
    device_id: usize,
    ranges: impl IntoIterator<Item = &'a DeviceRange>,
) -> Result<()> {
    let mut done: Vec<u64> = Vec::new();
    for stream in ranges.into_iter().filter_map(|d| d.stream) {
        if !done.contains(&stream) {
            synchronize(device_id, stream)?;
            done.push(stream);
        }
    }
    Ok(())
}

/// Why a GPU tier could not open, for the warning that names the missing GPU.
pub fn missing_gpu_reason() -> &'static str {
    if cascade_gpu::driver_present() {
        "the CUDA driver is present but the device could not be opened"
    } else {
        "no CUDA driver: libcuda.so could not be loaded"
    }
}
