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

/// Checks that every range lives on `device_id` (the store's device: the copies run in
/// its context, where another GPU's address would be read as this one's), then
/// synchronizes each distinct producer stream of `ranges` once.
pub fn sync_ranges<'a>(
    device_id: usize,
    ranges: impl IntoIterator<Item = &'a DeviceRange>,
) -> Result<()> {
    let ranges: Vec<&DeviceRange> = ranges.into_iter().collect();
    check_devices(device_id, &ranges, pointer_device)?;
    let mut done: Vec<u64> = Vec::new();
    for stream in ranges.iter().filter_map(|d| d.stream) {
        if !done.contains(&stream) {
            synchronize(device_id, stream)?;
            done.push(stream);
        }
    }
    Ok(())
}

/// Where the driver finds an address: the device and the allocation around it.
struct Located {
    device: usize,
    start: u64,
    end: u64,
}

/// An error for the first range not on `device_id`: its device as the producer named
/// it, else as `locate` (the driver) finds it from the address.
fn check_devices(
    device_id: usize,
    ranges: &[&DeviceRange],
    locate: impl Fn(usize, u64) -> Result<Located>,
) -> Result<()> {
    // Pieces and rows are mostly views of a few allocations (an engine's per-layer
    // pools): one driver query per allocation answers for every range inside it.
    let mut allocations: Vec<(u64, u64)> = Vec::new();
    for range in ranges {
        let inside = |&(start, end): &(u64, u64)| start <= range.ptr && range.ptr < end;
        let device = match range.device {
            Some(device) => device,
            None if allocations.iter().any(inside) => device_id,
            None => {
                let found = locate(device_id, range.ptr)?;
                if found.device == device_id {
                    allocations.push((found.start, found.end));
                }
                found.device
            }
        };
        if device != device_id {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the tensor is on cuda:{device}, but this store copies on cuda:{device_id} \
                     (its GPU tier's device, or device 0 without one); move it there first \
                     (tensor.to('cuda:{device_id}'))"
                ),
            )
            .with_context("tensor_device", device)
            .with_context("store_device", device_id));
        }
    }
    Ok(())
}

/// One pointer attribute of `ptr` that the driver writes as a value of type `T`.
///
/// # Safety
/// `attribute` must be one the driver writes as exactly a `T`.
unsafe fn pointer_attribute<T: Default>(
    ptr: u64,
    attribute: sys::CUpointer_attribute,
) -> Result<T> {
    let mut value = T::default();
    // SAFETY: the caller's contract: the driver writes one `T` into `value`; it only
    // reads the address to look up its allocation.
    let status = unsafe {
        sys::cuPointerGetAttribute(
            (&mut value as *mut T).cast(),
            attribute,
            ptr as sys::CUdeviceptr,
        )
    };
    if status == sys::CUresult::CUDA_SUCCESS {
        Ok(value)
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the tensor's address {ptr:#x} is not CUDA device memory the driver knows \
                 ({status:?})"
            ),
        ))
    }
}

/// The device of the allocation holding `ptr`, and that allocation's span.
fn pointer_device(device_id: usize, ptr: u64) -> Result<Located> {
    let ctx = context(device_id)?;
    ctx.bind_to_thread()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot bind the CUDA context: {e}")))?;
    use sys::CUpointer_attribute::{
        CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, CU_POINTER_ATTRIBUTE_RANGE_SIZE,
        CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
    };
    // SAFETY: the ordinal is an int, the range start a CUdeviceptr, its size a size_t.
    let (ordinal, start, size) = unsafe {
        (
            pointer_attribute::<i32>(ptr, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL)?,
            pointer_attribute::<sys::CUdeviceptr>(ptr, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR)?,
            pointer_attribute::<usize>(ptr, CU_POINTER_ATTRIBUTE_RANGE_SIZE)?,
        )
    };
    let device = usize::try_from(ordinal).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("the driver names no device for address {ptr:#x}"),
        )
    })?;
    Ok(Located {
        device,
        start,
        end: start.saturating_add(size as u64),
    })
}

/// Why a GPU tier could not open, for the warning that names the missing GPU.
pub fn missing_gpu_reason() -> &'static str {
    if cascade_gpu::driver_present() {
        "the CUDA driver is present but the device could not be opened"
    } else {
        "no CUDA driver: libcuda.so could not be loaded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ptr: u64, len: usize, device: Option<usize>) -> DeviceRange {
        DeviceRange {
            ptr,
            len,
            stream: None,
            device,
        }
    }

    fn never(_: usize, ptr: u64) -> Result<Located> {
        panic!("the driver was asked about {ptr:#x}")
    }

    #[test]
    fn ranges_on_the_stores_device_pass_and_another_device_is_invalid_input() {
        let ok = [range(0x1000, 64, Some(0)), range(0x2000, 64, Some(0))];
        check_devices(0, &ok.iter().collect::<Vec<_>>(), never).unwrap();
        let other = [range(0x1000, 64, Some(0)), range(0x9000, 64, Some(1))];
        let err = check_devices(0, &other.iter().collect::<Vec<_>>(), never).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("cuda:1"), "{err}");
    }

    #[test]
    fn unnamed_devices_are_looked_up_once_per_allocation() {
        let asked = std::cell::Cell::new(0);
        // Two allocations: [0x1000, 0x5000) on device 0, [0x10_000, 0x20_000) on device 2.
        let locate = |_: usize, ptr: u64| {
            asked.set(asked.get() + 1);
            Ok(if ptr >= 0x10_000 {
                Located {
                    device: 2,
                    start: 0x10_000,
                    end: 0x20_000,
                }
            } else {
                Located {
                    device: 0,
                    start: 0x1000,
                    end: 0x5000,
                }
            })
        };
        // Three pieces of one allocation: one lookup answers for all three.
        let pieces = [
            range(0x1000, 64, None),
            range(0x2000, 64, None),
            range(0x4fc0, 64, None),
        ];
        check_devices(0, &pieces.iter().collect::<Vec<_>>(), locate).unwrap();
        assert_eq!(asked.get(), 1);
        let far = [range(0x1000, 64, None), range(0x10_000, 64, None)];
        let err = check_devices(0, &far.iter().collect::<Vec<_>>(), locate).unwrap_err();
        assert!(err.to_string().contains("cuda:2"), "{err}");
    }
}
