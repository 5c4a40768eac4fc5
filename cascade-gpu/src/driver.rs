//! Loading the CUDA driver and turning its failures into Cascade errors.
//!
//! cudarc loads libcuda at run time and panics on the first call when the library is
//! missing, so every entry point here checks for it first and answers
//! [`ErrorKind::Unavailable`] instead.

use std::sync::Arc;

use cascade_core::{Error, ErrorKind, Result};
use cudarc::driver::{CudaContext, DriverError, sys};

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names; calls nothing in it.
    unsafe { sys::is_culib_present() }
}

/// Fails with [`ErrorKind::Unavailable`] when the driver library is absent.
pub fn require_driver() -> Result<()> {
    if driver_present() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Unavailable,
            "no CUDA driver: libcuda.so could not be loaded (install the NVIDIA driver, \
             or add its directory, e.g. /usr/local/nvidia/lib64, to LD_LIBRARY_PATH)",
        ))
    }
}

/// Retains the primary context of `device_id`, after checking the driver is there.
pub fn open_context(device_id: usize) -> Result<Arc<CudaContext>> {
    require_driver()?;
    let count = CudaContext::device_count().map_err(|e| unavailable("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "the CUDA driver sees no GPU",
        ));
    }
    if device_id >= count as usize {
        return Err(Error::config("device_id names no GPU on this machine")
            .with_context("device_id", device_id)
            .with_context("devices", count));
    }
    let ctx =
        CudaContext::new(device_id).map_err(|e| unavailable("cuDevicePrimaryCtxRetain", e))?;
    // SAFETY: this crate never lets cudarc track events on its allocations; it orders
    // copies itself with one event per stream and batch (see copy.rs), and views of one
    // slab on different streams must not serialize.
    unsafe { ctx.disable_event_tracking() };
    Ok(ctx)
}

/// Whether the loaded driver exports `cuMemcpyBatchAsync` (CUDA 12.8 and newer).
pub fn has_batch_copy() -> bool {
    if !driver_present() {
        return false;
    }
    // SAFETY: looks a symbol up in the already-present driver library without calling it.
    unsafe {
        sys::culib()
            .get::<unsafe extern "C" fn()>(b"cuMemcpyBatchAsync\0")
            .is_ok()
    }
}

/// A failed driver call during I/O.
pub fn cuda_error(op: &'static str, err: DriverError) -> Error {
    Error::new(ErrorKind::Io, format!("CUDA call {op} failed: {err}"))
        .with_context("cuda_call", op)
        .with_source(err)
}

/// A failed driver call while setting up (the device is not usable).
pub fn unavailable(op: &'static str, err: DriverError) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("CUDA call {op} failed: {err}"),
    )
    .with_context("cuda_call", op)
    .with_source(err)
}

/// Turns a raw driver status into a result.
pub fn check(op: &'static str, status: sys::CUresult) -> Result<()> {
    status.result().map_err(|e| cuda_error(op, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_driver_is_unavailable_not_a_panic() {
        if driver_present() {
            eprintln!(
                "skipped: a CUDA driver is present, so the no-driver path cannot be seen here"
            );
            return;
        }
        let err = open_context(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("libcuda"), "{err}");
        assert!(!has_batch_copy());
    }
}
