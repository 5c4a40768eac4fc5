//! The pinned staging pool that pageable host memory goes through, and the crew of
//! threads that copies between pageable memory and staging buffers.
//!
//! A PCIe Gen5 link moves about 55 GB/s; one CPU thread copies 8 to 12 GB/s, so the
//! copy into (or out of) each staging buffer is split over several threads while the
//! DMA of the neighbouring buffer runs.

use std::collections::VecDeque;
use std::sync::Arc;

use cascade_core::{Error, Result};
use cudarc::driver::{CudaContext, CudaEvent};
use parking_lot::{Condvar, Mutex};

use crate::driver::cuda_error;
use crate::memory::PinnedBuffer;

/// One pinned buffer and the event recorded after the last DMA that used it.
pub struct StagingBuffer {
    mem: PinnedBuffer,
    last_use: CudaEvent,
}

impl StagingBuffer {
    /// First byte.
    pub fn ptr(&self) -> *mut u8 {
        self.mem.ptr()
    }

    /// The event to record after enqueuing a DMA that reads or writes this buffer.
    pub fn last_use(&self) -> &CudaEvent {
        &self.last_use
    }
}

/// A fixed set of staging buffers handed out one lease at a time.
pub struct StagingPool {
    free: Mutex<VecDeque<StagingBuffer>>,
    returned: Condvar,
    buffer_len: usize,
}

impl StagingPool {
    /// Allocates `count` pinned buffers of `len` bytes each.
    pub fn new(ctx: &Arc<CudaContext>, count: usize, len: usize) -> Result<Self> {
        let mut buffers = VecDeque::with_capacity(count);
        for _ in 0..count {
            let last_use = ctx
                .new_event(None)
                .map_err(|e| cuda_error("cuEventCreate", e))?;
            buffers.push_back(StagingBuffer {
                mem: PinnedBuffer::new(ctx, len)?,
                last_use,
            });
        }
        Ok(Self {
            free: Mutex::new(buffers),
            returned: Condvar::new(),
            buffer_len: len,
        })
    }

    /// Bytes per buffer.
    pub fn buffer_len(&self) -> usize {
        self.buffer_len
    }

    /// Waits for a free buffer whose last DMA has finished.
    ///
    /// Call it only while holding no other lease of this pool: a thread that holds
    /// buffers and waits for more could wait forever on threads doing the same.
    pub fn acquire(&self) -> Result<StagingLease<'_>> {
        let buffer = {
            let mut free = self.free.lock();
            loop {
                if let Some(buffer) = free.pop_front() {
                    break buffer;
                }
                self.returned.wait(&mut free);
            }
        };
        StagingLease::ready(self, buffer)
    }

    /// A free buffer if there is one now.
    pub fn try_acquire(&self) -> Result<Option<StagingLease<'_>>> {
        let buffer = self.free.lock().pop_front();
        buffer.map(|b| StagingLease::ready(self, b)).transpose()
    }

    fn give_back(&self, buffer: StagingBuffer) {
        // Back of the queue: the buffer whose DMA was enqueued longest ago is lent first,
        // so a lease rarely waits for the copy just issued.
        self.free.lock().push_back(buffer);
        self.returned.notify_one();
    }
}

/// A staging buffer lent to one user; goes back to the pool on drop.
pub struct StagingLease<'p> {
    pool: &'p StagingPool,
    buffer: Option<StagingBuffer>,
}

impl<'p> StagingLease<'p> {
    fn ready(pool: &'p StagingPool, buffer: StagingBuffer) -> Result<Self> {
        let lease = Self {
            pool,
            buffer: Some(buffer),
        };
        lease
            .get()
            .last_use
            .synchronize()
            .map_err(|e| cuda_error("cuEventSynchronize", e))?;
        Ok(lease)
    }

    /// The buffer.
    pub fn get(&self) -> &StagingBuffer {
        // The option is only emptied by drop.
        self.buffer
            .as_ref()
            .unwrap_or_else(|| unreachable!("lease used after drop"))
    }
}

impl Drop for StagingLease<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(buffer);
        }
    }
}

/// One CPU copy: `len` bytes from `src` to `dst`.
#[derive(Debug, Clone, Copy)]
pub struct HostCopy {
    /// Destination.
    pub dst: *mut u8,
    /// Source.
    pub src: *const u8,
    /// Bytes.
    pub len: usize,
}

// SAFETY: a HostCopy is an instruction; `CopyCrew::copy_all`'s caller guarantees the
// ranges are valid and unaliased until it returns, whichever thread runs the copy.
unsafe impl Send for HostCopy {}

/// Below this many bytes a batch of CPU copies runs on the calling thread alone, and
/// no job handed to the crew is smaller.
const PARALLEL_THRESHOLD: usize = 1 << 20;

/// Threads that run CPU copies for the staging path.
///
/// A private rayon pool used only through `spawn`; callers wait on a plain condition
/// variable, never inside rayon: a caller that is itself a rayon worker (the store's
/// batch calls) must not steal unrelated jobs while it holds staging buffers.
pub struct CopyCrew {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

struct Latch {
    left: Mutex<usize>,
    done: Condvar,
}

impl Latch {
    fn count_down(&self) {
        let mut left = self.left.lock();
        *left -= 1;
        if *left == 0 {
            self.done.notify_all();
        }
    }

    fn wait(&self) {
        let mut left = self.left.lock();
        while *left > 0 {
            self.done.wait(&mut left);
        }
    }

    fn is_done(&self) -> bool {
        *self.left.lock() == 0
    }
}

struct CountDownOnDrop(Arc<Latch>);

impl Drop for CountDownOnDrop {
    fn drop(&mut self) {
        self.0.count_down();
    }
}

/// Copies handed to the crew. Dropping the ticket waits for them, so the memory they
/// touch is never released while a copy still runs.
pub struct CopyTicket {
    latch: Option<Arc<Latch>>,
}

impl CopyTicket {
    /// Whether every copy has finished.
    pub fn is_done(&self) -> bool {
        self.latch.as_ref().is_none_or(|l| l.is_done())
    }

    /// Blocks until every copy has finished.
    pub fn wait(&self) {
        if let Some(latch) = &self.latch {
            latch.wait();
        }
    }
}

impl Drop for CopyTicket {
    fn drop(&mut self) {
        self.wait();
    }
}

impl CopyCrew {
    /// A crew of `threads` copy threads (1: copies run on the caller's thread).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("cascade-gpu-copy-{i}"))
                    .build()
                    .map_err(|e| Error::config(format!("copy_threads: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self { pool, threads })
    }

    /// Starts the copies on the crew and returns at once; small sets (under 1 MiB) and
    /// one-thread crews copy on the calling thread before returning.
    ///
    /// # Safety
    /// Each copy's source must be readable and its destination writable for `len` bytes
    /// until the ticket reports done (dropping it waits), the ticket must not be leaked
    /// (`mem::forget`), and no destination may overlap another copy's range or a range
    /// of any copy still running.
    pub unsafe fn submit(&self, copies: Vec<HostCopy>) -> CopyTicket {
        let total: usize = copies.iter().map(|c| c.len).sum();
        let Some(pool) = self.pool.as_ref().filter(|_| total >= PARALLEL_THRESHOLD) else {
            // SAFETY: the caller's contract.
            unsafe { run(&copies) };
            return CopyTicket { latch: None };
        };
        let shares = split(
            &copies,
            total.div_ceil(self.threads).max(PARALLEL_THRESHOLD),
        );
        let latch = Arc::new(Latch {
            left: Mutex::new(shares.len()),
            done: Condvar::new(),
        });
        for share in shares {
            let guard = CountDownOnDrop(Arc::clone(&latch));
            pool.spawn(move || {
                let _guard = guard;
                // SAFETY: the ticket's holder keeps the ranges valid until the latch
                // reaches zero, which happens only after this copy.
                unsafe { run(&share) };
            });
        }
        CopyTicket { latch: Some(latch) }
    }
}

/// # Safety
/// As for [`CopyCrew::submit`].
unsafe fn run(copies: &[HostCopy]) {
    for c in copies {
        // SAFETY: the caller guarantees valid, non-overlapping ranges.
        unsafe { std::ptr::copy_nonoverlapping(c.src, c.dst, c.len) };
    }
}

/// Cuts `copies` into shares of about `target` bytes, splitting large copies.
fn split(copies: &[HostCopy], target: usize) -> Vec<Vec<HostCopy>> {
    let target = target.max(1);
    let mut shares = Vec::new();
    let mut current = Vec::new();
    let mut room = target;
    for c in copies {
        let mut done = 0;
        while done < c.len {
            if room == 0 {
                shares.push(std::mem::take(&mut current));
                room = target;
            }
            let take = (c.len - done).min(room);
            // wrapping_add only computes addresses; nothing is dereferenced here.
            current.push(HostCopy {
                dst: c.dst.wrapping_add(done),
                src: c.src.wrapping_add(done),
                len: take,
            });
            done += take;
            room -= take;
        }
    }
    if !current.is_empty() {
        shares.push(current);
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crew_copies_every_byte_in_parallel_and_alone() {
        let src: Vec<u8> = (0..3 * PARALLEL_THRESHOLD + 77)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for threads in [1, 3] {
            let crew = CopyCrew::new(threads).unwrap();
            let mut dst = vec![0xEEu8; src.len()];
            let half = src.len() / 2;
            let copies = [
                HostCopy {
                    dst: dst.as_mut_ptr(),
                    src: src.as_ptr(),
                    len: half,
                },
                HostCopy {
                    dst: dst[half..].as_mut_ptr(),
                    src: src[half..].as_ptr(),
                    len: src.len() - half,
                },
            ];
            // SAFETY: both vectors outlive the ticket, dropped (waited for) right here,
            // and the ranges do not overlap.
            drop(unsafe { crew.submit(copies.to_vec()) });
            assert!(dst == src, "threads = {threads}");
        }
    }

    #[test]
    fn split_keeps_bytes_and_order() {
        let copies = [
            HostCopy {
                dst: 1000 as *mut u8,
                src: 5000 as *const u8,
                len: 10,
            },
            HostCopy {
                dst: 2000 as *mut u8,
                src: 6000 as *const u8,
                len: 3,
            },
        ];
        let shares = split(&copies, 4);
        assert_eq!(shares.len(), 4);
        let flat: Vec<(usize, usize, usize)> = shares
            .iter()
            .flatten()
            .map(|c| (c.dst as usize, c.src as usize, c.len))
            .collect();
        assert_eq!(
            flat,
            vec![
                (1000, 5000, 4),
                (1004, 5004, 4),
                (1008, 5008, 2),
                (2000, 6000, 2),
                (2002, 6002, 1)
            ]
        );
    }
}
