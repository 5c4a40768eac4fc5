//! Many small device-to-device copies in one launch, their descriptors in device memory:
//! how blocks kept in small pieces are gathered into (and scattered from) one contiguous
//! device buffer around a single DMA. The kernel's source is `kernels/gather.cu`.

use std::ffi::c_void;
use std::sync::Arc;

use cascade_core::Result;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};

use crate::dma::DmaCopy;
use crate::driver::cuda_error;
use crate::kernel::LoadedKernel;

const PTX: &str = include_str!("gather_kernel.ptx");
const ENTRY: &str = "cascade_copy_pieces";
const THREADS: u32 = 256;
/// CTAs of one launch at most; each strides over the pieces beyond.
const MAX_CTAS: usize = 65_535;

/// The piece-copy kernel, loaded.
pub struct PieceKernel {
    kernel: LoadedKernel,
}

impl PieceKernel {
    /// Compiles and loads the kernel in `ctx` (current on this thread).
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        Ok(Self {
            kernel: LoadedKernel::load(ctx, PTX, ENTRY)?,
        })
    }

    /// Enqueues every device-to-device copy of `pieces` on `stream` as one launch; the
    /// descriptors, which must live until the stream has run the launch.
    ///
    /// # Safety
    /// Every range must be device memory of this context valid until the launch has
    /// run, and no destination may overlap another piece's range.
    pub unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        pieces: &[DmaCopy],
    ) -> Result<Option<CudaSlice<u64>>> {
        if pieces.is_empty() {
            return Ok(None);
        }
        let flat: Vec<u64> = pieces
            .iter()
            .flat_map(|p| [p.dst, p.src, p.len as u64])
            .collect();
        let descs = stream
            .clone_htod(&flat)
            .map_err(|e| cuda_error("cuMemcpyHtoDAsync", e))?;
        let mut count = u32::try_from(pieces.len()).map_err(|_| {
            cascade_core::Error::new(
                cascade_core::ErrorKind::InvalidInput,
                "too many pieces for one launch",
            )
            .with_context("pieces", pieces.len())
        })?;
        let ctas = pieces.len().min(MAX_CTAS) as u32;
        {
            let (mut descs_ptr, _sync) = descs.device_ptr(stream);
            let mut params = [
                (&raw mut descs_ptr).cast::<c_void>(),
                (&raw mut count).cast::<c_void>(),
            ];
            // SAFETY: the parameters match the kernel's (const Piece*, unsigned); the
            // descriptors are returned to the caller, who keeps them until the stream
            // has run the launch, and the caller guarantees the ranges.
            unsafe {
                self.kernel
                    .launch(stream.cu_stream(), ctas, THREADS, &mut params)
            }?;
        }
        Ok(Some(descs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_declares_the_entry_and_an_isa_old_drivers_load() {
        assert!(PTX.contains(&format!(".visible .entry {ENTRY}(")));
        assert!(PTX.contains("\n.version 7.0\n"), "see kernels/gather.cu");
    }
}
