//! Device-pointer put and get: KV in GPU memory goes to and from the store without the
//! caller staging it in host memory (device to device into a GPU tier, or by DMA into a
//! host tier). Builds without the `gpu` feature answer `CASCADE_STATUS_UNSUPPORTED`;
//! a GPU build where no device memory can be reached answers `CASCADE_STATUS_UNAVAILABLE`.

use cascade::{Error, ErrorKind, PutOutcome};

use crate::args;
use crate::error::{CResult, Failure, guard};
use crate::ids::CascadeBlockId;
use crate::status::CascadeStatus;
use crate::store::{CascadeHandle, open_store};

/// Whether this build has the GPU tier (the `gpu` feature). A build with it still
/// needs a GPU and its driver at run time, and a deployment with a GPU tier, for the
/// device calls to succeed.
///
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn cascade_has_gpu_support() -> bool {
    cfg!(feature = "gpu")
}

fn require_gpu_build() -> CResult {
    if cfg!(feature = "gpu") {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        "this build of cascade-c has no GPU support (built without the `gpu` feature)",
    )
    .into())
}

/// Stores `len` bytes of device (GPU) memory at address `src` under `id` (on the device
/// of the store's GPU tier; device 0 without one), placed as `cascade_put` places host
/// bytes. Dedup as `cascade_put`; `*out_deduplicated` (when not NULL) says whether the
/// id was already stored.
///
/// Errors: `CASCADE_STATUS_UNSUPPORTED` when the build has no GPU support;
/// `UNAVAILABLE` when no GPU or driver is usable here; `TOO_LARGE` / `TIER_FULL` as
/// `cascade_put`; `INVALID_INPUT` for a NULL store or a zero
/// `src` with a non-zero `len`.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `[src, src + len)` is device memory on the GPU tier's device, valid and not written
/// until the call returns; `store` is an open handle; `out_deduplicated` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_put_device(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    src: u64,
    len: usize,
    out_deduplicated: *mut bool,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, dedup) = unsafe {
            (
                open_store(store)?,
                args::out_opt(out_deduplicated, "out_deduplicated")?,
            )
        };
        require_gpu_build()?;
        if src == 0 && len > 0 {
            return Err(Failure::invalid("src is a NULL device pointer"));
        }
        // SAFETY: the caller's contract is put_device's.
        let outcome = unsafe { store.put_device(id.into(), src, len) }?;
        if let Some(dedup) = dedup {
            dedup.write(outcome == PutOutcome::Deduplicated);
        }
        Ok(())
    })
}

/// Copies the block `id` into device (GPU) memory at `dst` (`capacity` bytes) and sets
/// `*out_len` to its size, from whichever tier holds it.
///
/// Errors: `CASCADE_STATUS_NOT_FOUND` when it is not stored; `UNSUPPORTED` when the build
/// has no GPU support; `UNAVAILABLE` when no GPU or driver is usable here; `INVALID_INPUT` when `capacity` is too small
/// (`*out_len` = the size needed) or for NULL arguments; `CORRUPT` as `cascade_get`.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `[dst, dst + capacity)` is device memory on the GPU tier's device that nothing else
/// reads or writes until the call returns; `store` is an open handle; `out_len` is
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_device(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    dst: u64,
    capacity: usize,
    out_len: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, len) = unsafe { (open_store(store)?, args::out(out_len, "out_len")?) };
        len.write(0);
        require_gpu_build()?;
        if dst == 0 && capacity > 0 {
            return Err(Failure::invalid("dst is a NULL device pointer"));
        }
        // SAFETY: the caller's contract is get_device's.
        match unsafe { store.get_device(id.into(), dst, capacity) } {
            Ok(Some(n)) => {
                len.write(n);
                Ok(())
            }
            Ok(None) => Err(Failure::Missing(id.into())),
            Err(e) => {
                if let Some(need) = store.len_of(id.into()).filter(|&n| n > capacity as u64) {
                    len.write(usize::try_from(need).unwrap_or(usize::MAX));
                }
                Err(e.into())
            }
        }
    })
}
