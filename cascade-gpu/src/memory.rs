//! Owned CUDA memory as RAII values: the device slab, pinned host buffers, and host
//! ranges registered with CUDA. Each frees itself in `Drop` and never panics there.

use std::ffi::c_void;
use std::sync::Arc;

use cascade_core::{Error, ErrorKind, Result};
use cudarc::driver::{CudaContext, result, sys};

use crate::driver::{check, cuda_error};

/// One allocation of device memory (`cuMemAlloc`), freed on drop.
pub struct DeviceSlab {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
    len: usize,
}

impl DeviceSlab {
    /// Allocates `len` bytes on the context's device.
    pub fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        ctx.bind_to_thread()
            .map_err(|e| cuda_error("cuCtxSetCurrent", e))?;
        // SAFETY: the context is current; the memory is only ever addressed through
        // extents inside [ptr, ptr + len).
        let ptr = unsafe { result::malloc_sync(len) }.map_err(|e| {
            let (free, total) = ctx.mem_get_info().unwrap_or((0, 0));
            Error::new(
                ErrorKind::Unavailable,
                "could not allocate the GPU tier's device memory",
            )
            .with_context("capacity_bytes", len)
            .with_context("device_free_bytes", free)
            .with_context("device_total_bytes", total)
            .with_source(e)
        })?;
        Ok(Self {
            ctx: Arc::clone(ctx),
            ptr,
            len,
        })
    }

    /// Device address of the first byte.
    pub fn ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for DeviceSlab {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync in `new`, freed once; the tier waits for
            // every copy touching it before dropping.
            if let Err(e) = unsafe { result::free_sync(self.ptr) } {
                tracing::warn!(error = %e, "cuMemFree of the GPU tier slab failed");
            }
        }
    }
}

/// Page-locked host memory from `cuMemHostAlloc` (not write-combined: the CPU reads it
/// back when a block goes to pageable memory), freed on drop.
pub struct PinnedBuffer {
    ctx: Arc<CudaContext>,
    ptr: *mut u8,
}

// SAFETY: the buffer is plain host memory; whoever writes it holds it exclusively (the
// staging pool hands each buffer to one user at a time).
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared references only read the address, never the bytes.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `len` pinned bytes, portable across contexts.
    pub fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        ctx.bind_to_thread()
            .map_err(|e| cuda_error("cuCtxSetCurrent", e))?;
        // SAFETY: the context is current; flags 0 plus PORTABLE gives cached (not
        // write-combined) memory, which the CPU may read at full speed.
        let ptr = unsafe { result::malloc_host(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(|e| cuda_error("cuMemHostAlloc", e).with_context("bytes", len))?;
        let ptr = ptr.cast::<u8>();
        // Touch every page now so the first timed copy does not fault.
        // SAFETY: the allocation is `len` bytes and owned here.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(Self {
            ctx: Arc::clone(ctx),
            ptr,
        })
    }

    /// First byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_host in `new` and freed once; no copy uses it
            // any more (the staging pool waits for each buffer's last event).
            if let Err(e) = unsafe { result::free_host(self.ptr.cast::<c_void>()) } {
                tracing::warn!(error = %e, "cuMemFreeHost of a staging buffer failed");
            }
        }
    }
}

/// A host range pinned in place with `cuMemHostRegister`, unregistered on drop.
pub struct HostRegistration {
    ctx: Arc<CudaContext>,
    base: usize,
    len: usize,
}

impl HostRegistration {
    /// Registers `[base, base + len)`.
    ///
    /// # Safety
    /// The range must be mapped host memory that stays mapped until this value drops.
    pub unsafe fn new(ctx: &Arc<CudaContext>, base: *mut u8, len: usize) -> Result<Self> {
        ctx.bind_to_thread()
            .map_err(|e| cuda_error("cuCtxSetCurrent", e))?;
        // SAFETY: the caller keeps the range mapped for our lifetime; PORTABLE makes it
        // usable from every context.
        let status = unsafe {
            sys::cuMemHostRegister_v2(base.cast::<c_void>(), len, sys::CU_MEMHOSTREGISTER_PORTABLE)
        };
        check("cuMemHostRegister", status).map_err(|e| e.with_context("bytes", len))?;
        Ok(Self {
            ctx: Arc::clone(ctx),
            base: base as usize,
            len,
        })
    }

    /// Registers `[base, base + len)` unless the driver already has it registered (by
    /// another owner, like the GPU tier): `None` then, and the range is usable as is.
    ///
    /// # Safety
    /// As for [`HostRegistration::new`].
    pub unsafe fn register(
        ctx: &Arc<CudaContext>,
        base: *mut u8,
        len: usize,
    ) -> Result<Option<Self>> {
        ctx.bind_to_thread()
            .map_err(|e| cuda_error("cuCtxSetCurrent", e))?;
        // SAFETY: the caller keeps the range mapped for our lifetime; PORTABLE makes it
        // usable from every context.
        let status = unsafe {
            sys::cuMemHostRegister_v2(base.cast::<c_void>(), len, sys::CU_MEMHOSTREGISTER_PORTABLE)
        };
        if status == sys::CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED {
            return Ok(None);
        }
        check("cuMemHostRegister", status).map_err(|e| e.with_context("bytes", len))?;
        Ok(Some(Self {
            ctx: Arc::clone(ctx),
            base: base as usize,
            len,
        }))
    }

    /// First registered byte.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Registered bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: registered in `new`, unregistered once; the tier has waited for the
            // copies that used it.
            let status = unsafe { sys::cuMemHostUnregister(self.base as *mut c_void) };
            if let Err(e) = status.result() {
                tracing::warn!(error = %e, "cuMemHostUnregister failed");
            }
        }
    }
}

/// Where a host address range lives, as far as DMA is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Page-locked (allocated pinned, or registered): the GPU can DMA it directly.
    Pinned,
    /// Ordinary pageable memory: goes through a staging buffer.
    Pageable,
}

/// Asks the driver whether `[ptr, ptr + len)` is page-locked host memory. Returns the
/// pinned allocation's bounds when the driver reports them, so callers can answer
/// further addresses in the same allocation without asking again.
pub fn query_host(ptr: usize, len: usize) -> (HostKind, Option<(usize, usize)>) {
    let mut memory_type: u32 = 0;
    let mut start: sys::CUdeviceptr = 0;
    let mut size: usize = 0;
    let mut attributes = [
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_SIZE,
    ];
    let mut data = [
        (&raw mut memory_type).cast::<c_void>(),
        (&raw mut start).cast::<c_void>(),
        (&raw mut size).cast::<c_void>(),
    ];
    // SAFETY: three attributes with three out-pointers of the sizes the driver writes
    // (u32 memory type, CUdeviceptr start, size_t size). Unknown pointers are answered
    // with zeros, not an error.
    let status = unsafe {
        sys::cuPointerGetAttributes(
            3,
            attributes.as_mut_ptr(),
            data.as_mut_ptr(),
            ptr as sys::CUdeviceptr,
        )
    };
    let host = sys::CUmemorytype::CU_MEMORYTYPE_HOST as u32;
    if status.result().is_err() || memory_type != host {
        return (HostKind::Pageable, None);
    }
    let start = start as usize;
    if size > 0 && ptr >= start && ptr + len <= start + size {
        return (HostKind::Pinned, Some((start, size)));
    }
    // No bounds reported: accept the range only if its last byte is pinned as well.
    let last = ptr + len.saturating_sub(1);
    let mut last_type: u32 = 0;
    // SAFETY: one u32 out-pointer for CU_POINTER_ATTRIBUTE_MEMORY_TYPE.
    let status = unsafe {
        sys::cuPointerGetAttribute(
            (&raw mut last_type).cast::<c_void>(),
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            last as sys::CUdeviceptr,
        )
    };
    if status.result().is_ok() && last_type == host {
        (HostKind::Pinned, None)
    } else {
        (HostKind::Pageable, None)
    }
}

/// A device allocation as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRange {
    /// First byte of the allocation.
    pub start: u64,
    /// Its length.
    pub size: usize,
    /// The ordinal of the GPU holding it.
    pub ordinal: i32,
}

impl DeviceRange {
    /// Whether `[ptr, ptr + len)` lies inside.
    pub fn covers(&self, ptr: u64, len: usize) -> bool {
        ptr >= self.start && ptr.saturating_add(len as u64) <= self.start + self.size as u64
    }
}

/// Asks the driver whether `[ptr, ptr + len)` is device memory of one allocation, on
/// any GPU; returns the allocation when it is.
pub fn query_device(ptr: u64, len: usize) -> Option<DeviceRange> {
    let mut memory_type: u32 = 0;
    let mut start: sys::CUdeviceptr = 0;
    let mut size: usize = 0;
    let mut ordinal: i32 = -1;
    let mut attributes = [
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_SIZE,
        sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
    ];
    let mut data = [
        (&raw mut memory_type).cast::<c_void>(),
        (&raw mut start).cast::<c_void>(),
        (&raw mut size).cast::<c_void>(),
        (&raw mut ordinal).cast::<c_void>(),
    ];
    // SAFETY: four attributes with out-pointers of the sizes the driver writes (u32
    // memory type, CUdeviceptr start, size_t size, int ordinal).
    let status =
        unsafe { sys::cuPointerGetAttributes(4, attributes.as_mut_ptr(), data.as_mut_ptr(), ptr) };
    let device = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32;
    let range = DeviceRange {
        start,
        size,
        ordinal,
    };
    (status.result().is_ok() && memory_type == device && range.covers(ptr, len)).then_some(range)
}
