//! A device-to-device copy kernel for KV blocks an engine holds on the GPU.
//!
//! The driver runs device-to-device copies of a `cuMemcpyBatchAsync` group one at a
//! time, far below HBM speed for 128 KiB blocks (an earlier run on an H100); one launch
//! of this kernel copies a whole group at once. The device path's rate, kernel in use,
//! is in docs/benchmarks.md, "GPU tier (cascade-gpu)".
//! The kernel ships as PTX text and is compiled by the driver when the tier opens.

use std::ffi::{CString, c_void};
use std::sync::Arc;

use cascade_core::Result;
use cudarc::driver::{CudaContext, sys};

use crate::dma::DmaCopy;
use crate::driver::check;

const PTX: &str = include_str!("copy_kernel.ptx");
const ENTRY: &str = "cascade_copy_blocks";
/// Descriptors per launch: the kernel's parameter array holds 128 of 24 bytes.
pub const MAX_PER_LAUNCH: usize = 128;
const THREADS: u32 = 256;
/// Bytes one CTA copies per pass (each thread moves 16 bytes 4 times).
const BYTES_PER_CTA: usize = THREADS as usize * 16 * 4;
const MAX_CTAS_PER_BLOCK: usize = 64;

/// A PTX module loaded in a context and one of its entry points; unloaded on drop.
pub(crate) struct LoadedKernel {
    ctx: Arc<CudaContext>,
    module: sys::CUmodule,
    pub(crate) function: sys::CUfunction,
}

// SAFETY: CUmodule and CUfunction are handles the driver lets any thread use once the
// owning context is current, which every caller makes sure of.
unsafe impl Send for LoadedKernel {}
// SAFETY: launching is thread-safe in the driver; the handles are never mutated.
unsafe impl Sync for LoadedKernel {}

impl LoadedKernel {
    /// Compiles `ptx` and looks up `entry` in `ctx` (current on this thread).
    pub(crate) fn load(ctx: &Arc<CudaContext>, ptx: &str, entry: &str) -> Result<Self> {
        let image = CString::new(ptx)
            .map_err(|_| cascade_core::Error::config("PTX text holds a NUL byte"))?;
        let mut module: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: a NUL-terminated PTX image; the context is current.
        check("cuModuleLoadData", unsafe {
            sys::cuModuleLoadData(&mut module, image.as_ptr().cast::<c_void>())
        })?;
        let name = CString::new(entry)
            .map_err(|_| cascade_core::Error::config("entry name holds a NUL byte"))?;
        let mut function: sys::CUfunction = std::ptr::null_mut();
        // SAFETY: the module was just loaded; the name is NUL-terminated.
        let status = unsafe { sys::cuModuleGetFunction(&mut function, module, name.as_ptr()) };
        let kernel = Self {
            ctx: Arc::clone(ctx),
            module,
            function,
        };
        check("cuModuleGetFunction", status)?;
        Ok(kernel)
    }
}

impl LoadedKernel {
    /// Launches the entry on `stream` with `ctas` one-dimensional CTAs of `threads`
    /// threads; the status of the launch.
    ///
    /// # Safety
    /// `params` must point at values of the entry's parameter types, in order; every
    /// address among them, and all memory the kernel touches, must stay valid until the
    /// stream has run the launch.
    pub(crate) unsafe fn launch(
        &self,
        stream: sys::CUstream,
        ctas: u32,
        threads: u32,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        // SAFETY: the caller's contract; the driver copies the parameters during the call.
        let status = unsafe {
            sys::cuLaunchKernel(
                self.function,
                ctas,
                1,
                1,
                threads,
                1,
                1,
                0,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        check("cuLaunchKernel", status)
    }
}

impl Drop for LoadedKernel {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: loaded in `load`, unloaded once after every launch has completed
            // (the owners drain their streams before dropping their kernels).
            if let Err(e) = unsafe { sys::cuModuleUnload(self.module) }.result() {
                tracing::warn!(error = %e, "cuModuleUnload failed");
            }
        }
    }
}

/// The copy kernel, loaded.
pub struct CopyKernel {
    kernel: LoadedKernel,
}

impl CopyKernel {
    /// Compiles and loads the kernel in `ctx` (current on this thread).
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        Ok(Self {
            kernel: LoadedKernel::load(ctx, PTX, ENTRY)?,
        })
    }

    /// Enqueues the copies on `stream`, up to [`MAX_PER_LAUNCH`] per launch.
    ///
    /// # Safety
    /// Every source and destination must be device memory valid until the work enqueued
    /// here completes, and no destination may overlap another copy's range.
    pub unsafe fn launch(&self, stream: sys::CUstream, copies: &[DmaCopy]) -> Result<()> {
        for chunk in copies.chunks(MAX_PER_LAUNCH) {
            let mut count = chunk.len() as u32;
            let mut descs = [0u64; MAX_PER_LAUNCH * 3];
            let mut longest = 0usize;
            for (k, c) in chunk.iter().enumerate() {
                descs[3 * k] = c.dst;
                descs[3 * k + 1] = c.src;
                descs[3 * k + 2] = c.len as u64;
                longest = longest.max(c.len);
            }
            if longest == 0 {
                continue;
            }
            let ctas = longest.div_ceil(BYTES_PER_CTA).clamp(1, MAX_CTAS_PER_BLOCK) as u32;
            let mut params = [
                (&raw mut count).cast::<c_void>(),
                descs.as_mut_ptr().cast::<c_void>(),
            ];
            // SAFETY: the parameters match the kernel's (u32, 3072-byte array) and are
            // copied by the driver during the call; the caller guarantees the ranges.
            let status = unsafe {
                sys::cuLaunchKernel(
                    self.kernel.function,
                    ctas,
                    count,
                    1,
                    THREADS,
                    1,
                    1,
                    0,
                    stream,
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            };
            check("cuLaunchKernel", status)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_declares_the_entry_and_parameter_sizes() {
        assert!(PTX.contains(&format!(".visible .entry {ENTRY}(")));
        assert!(PTX.contains(&format!("p_descs[{}]", MAX_PER_LAUNCH * 24)));
    }
}
