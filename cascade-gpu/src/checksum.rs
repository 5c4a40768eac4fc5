//! Checksums of device blocks computed on the GPU: the XXH3-64 (seed 0, as
//! `cascade_hash::checksum`) that a host tier stores with each block.
//!
//! A block that reaches host memory by DMA is not in any CPU cache, so a host tier that
//! hashes it reads every byte back from memory, and that pass runs beside the DMA for
//! the same memory bandwidth (docs/benchmarks.md, "Store data path"). The GPU reads the
//! block from HBM instead, in well under the time its DMA takes, while the DMA runs.
//! The kernel's source is `kernels/xxh3.cu`; it ships as PTX, compiled by the driver
//! when a context loads it.

use std::ffi::c_void;
use std::sync::Arc;

use cascade_core::Result;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};

use crate::driver::cuda_error;
use crate::kernel::LoadedKernel;

const PTX: &str = include_str!("xxh3_kernel.ptx");
const ENTRY: &str = "cascade_xxh3_blocks";
/// Threads of one CTA: 8 warps, a block each.
const THREADS: u32 = 256;
const BLOCKS_PER_CTA: usize = THREADS as usize / 32;
/// XXH3 hashes inputs of at most this many bytes by other paths than the kernel's.
const LONGEST_SHORT_INPUT: usize = 240;

/// The checksum kernel, loaded, with a stream of its own so that it runs beside the
/// copies of the blocks it hashes.
pub struct ChecksumKernel {
    kernel: LoadedKernel,
    stream: Arc<CudaStream>,
}

impl ChecksumKernel {
    /// Compiles and loads the kernel in `ctx` (current on this thread).
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let kernel = LoadedKernel::load(ctx, PTX, ENTRY)?;
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_error("cuStreamCreate", e))?;
        Ok(Self { kernel, stream })
    }

    /// Whether the kernel hashes a block at `ptr` of `len` bytes: XXH3's long inputs
    /// (over 240 bytes) from an 8-byte aligned start. The host hashes the others.
    pub fn hashes(ptr: u64, len: usize) -> bool {
        len > LONGEST_SHORT_INPUT && ptr & 7 == 0
    }

    /// Starts hashing every `(device address, length)` of `blocks` that
    /// [`ChecksumKernel::hashes`]; the answer, one per block, once it is taken.
    ///
    /// # Safety
    /// Each block must be a valid device range of this context whose bytes do not
    /// change until the answer is finished or dropped.
    pub unsafe fn start(&self, blocks: &[(u64, usize)]) -> Result<PendingChecksums<'_>> {
        // SAFETY: the caller's contract.
        unsafe { self.start_on(&self.stream, blocks) }
    }

    /// [`ChecksumKernel::start`] on `stream`, after the work already enqueued there
    /// (blocks gathered into a device buffer by that stream's kernel).
    ///
    /// # Safety
    /// As [`ChecksumKernel::start`].
    pub unsafe fn start_on<'s>(
        &'s self,
        stream: &'s Arc<CudaStream>,
        blocks: &[(u64, usize)],
    ) -> Result<PendingChecksums<'s>> {
        let positions: Vec<usize> = (0..blocks.len())
            .filter(|&k| Self::hashes(blocks[k].0, blocks[k].1))
            .collect();
        let mut pending = PendingChecksums {
            stream,
            count: blocks.len(),
            positions,
            out: None,
            _descs: None,
        };
        if pending.positions.is_empty() {
            return Ok(pending);
        }
        let descs: Vec<u64> = pending
            .positions
            .iter()
            .flat_map(|&k| [blocks[k].0, blocks[k].1 as u64])
            .collect();
        let failed = |e| cuda_error("cuMemcpyHtoDAsync", e);
        let descs = stream.clone_htod(&descs).map_err(failed)?;
        let out = stream
            .alloc_zeros::<u64>(pending.positions.len())
            .map_err(|e| cuda_error("cuMemAllocAsync", e))?;
        let mut count = u32::try_from(pending.positions.len()).map_err(|_| {
            cascade_core::Error::new(
                cascade_core::ErrorKind::InvalidInput,
                "too many blocks for one checksum launch",
            )
            .with_context("blocks", pending.positions.len())
        })?;
        let ctas = pending.positions.len().div_ceil(BLOCKS_PER_CTA) as u32;
        let launched = {
            let (mut descs_ptr, _descs_sync) = descs.device_ptr(stream);
            let (mut out_ptr, _out_sync) = out.device_ptr(stream);
            let mut params = [
                (&raw mut descs_ptr).cast::<c_void>(),
                (&raw mut count).cast::<c_void>(),
                (&raw mut out_ptr).cast::<c_void>(),
            ];
            // SAFETY: the parameters match the kernel's (const Desc*, unsigned, u64*);
            // `descs` and `out` live in `pending` until the stream has finished with
            // them, and the caller keeps the blocks valid as long.
            unsafe {
                self.kernel
                    .launch(stream.cu_stream(), ctas, THREADS, &mut params)
            }
        };
        pending._descs = Some(descs);
        pending.out = Some(out);
        launched?;
        Ok(pending)
    }
}

/// Checksums being computed: [`PendingChecksums::finish`] waits for them. Dropped
/// unfinished (an error on the way), it waits for the kernel first, so that it never
/// reads memory its caller has handed back.
pub struct PendingChecksums<'k> {
    stream: &'k Arc<CudaStream>,
    count: usize,
    positions: Vec<usize>,
    out: Option<CudaSlice<u64>>,
    _descs: Option<CudaSlice<u64>>,
}

impl PendingChecksums<'_> {
    /// Waits for the kernel; one checksum per block given to `start`, `None` for those
    /// it does not hash.
    pub fn finish(mut self) -> Result<Vec<Option<u64>>> {
        let mut answers = vec![None; self.count];
        let Some(out) = self.out.take() else {
            return Ok(answers);
        };
        let sums = self
            .stream
            .clone_dtoh(&out)
            .map_err(|e| cuda_error("cuMemcpyDtoH", e))?;
        // Into pageable memory the copy returns once done; the wait says so in any case.
        self.stream
            .synchronize()
            .map_err(|e| cuda_error("cuStreamSynchronize", e))?;
        for (&k, sum) in self.positions.iter().zip(sums) {
            answers[k] = Some(sum);
        }
        Ok(answers)
    }
}

/// The checksums of `pending` (of `count` blocks), or none of them where there was no
/// kernel or it failed: the copies landed, and the host tier hashes what the GPU did not.
pub(crate) fn finish_checksums(
    pending: Option<PendingChecksums<'_>>,
    count: usize,
) -> Vec<Option<u64>> {
    match pending.map(PendingChecksums::finish) {
        Some(Ok(checksums)) => checksums,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "checksum kernel failed; the host tier hashes these blocks");
            vec![None; count]
        }
        None => vec![None; count],
    }
}

impl Drop for PendingChecksums<'_> {
    fn drop(&mut self) {
        if self.out.is_some()
            && let Err(e) = self.stream.synchronize()
        {
            tracing::warn!(error = %e, "cuStreamSynchronize failed after a checksum launch");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_declares_the_entry_and_an_isa_old_drivers_load() {
        assert!(PTX.contains(&format!(".visible .entry {ENTRY}(")));
        assert!(PTX.contains("\n.version 7.0\n"), "see kernels/xxh3.cu");
    }

    #[test]
    fn only_long_aligned_blocks_are_hashed_on_the_device() {
        assert!(ChecksumKernel::hashes(0x1000, 241));
        assert!(!ChecksumKernel::hashes(0x1000, 240));
        assert!(!ChecksumKernel::hashes(0x1004, 4096));
    }
}
