//! Upload: blocks copied into fresh extents of the slab, by DMA straight from device,
//! pinned or registered memory, or through the staging buffers (filled by the copy crew
//! while the previous buffer's DMA runs) from pageable memory, and published once landed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cascade_core::{BlockId, Result};

use crate::chunker::Chunker;
use crate::copy::{DmaCopy, Flight};
use crate::group::Grouper;
use crate::results::finish;
use crate::route::{Route, Side};
use crate::slot::Slot;
use crate::staging::{CopyTicket, HostCopy, StagingLease};
use crate::tier::GpuTier;

impl GpuTier {
    /// Copies each source into a fresh extent and publishes the blocks once landed.
    pub(crate) fn upload(&self, items: &[(BlockId, Side)]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = items.iter().map(|_| None).collect();
        let outcome = self.upload_into(items, &mut results);
        finish(results, outcome)
    }

    pub(crate) fn upload_into(
        &self,
        items: &[(BlockId, Side)],
        results: &mut [Option<Result<()>>],
    ) -> Result<()> {
        self.engine.bind()?;
        let mut router = self.router();
        let group = self.engine.group();
        let mut flight: Flight<'_, Vec<(usize, Arc<Slot>)>> = Flight::new(&self.engine);
        let mut host = Grouper::new(false, group);
        let mut device = Grouper::new(true, group);
        let mut staged: Vec<(usize, Side, Arc<Slot>)> = Vec::new();
        let mut direct = 0u64;
        for (i, &(_, side)) in items.iter().enumerate() {
            let routed = router
                .route(side)
                .and_then(|route| Ok((route, self.reserve(side.len())?)));
            let (route, slot) = match routed {
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
                Ok(routed) => routed,
            };
            let copy = DmaCopy {
                dst: self.device_addr(&slot),
                src: side.addr(),
                len: side.len(),
            };
            match route {
                Route::Staged => staged.push((i, side, slot)),
                Route::Direct => host.add(&mut flight, copy, (i, slot))?,
                Route::Device => device.add(&mut flight, copy, (i, slot))?,
            }
            if route != Route::Staged {
                direct += side.len() as u64;
            }
        }
        host.flush(&mut flight)?;
        device.flush(&mut flight)?;
        self.direct_bytes.fetch_add(direct, Ordering::Relaxed);
        self.upload_staged(&mut flight, &staged)?;
        flight.land(|blocks| {
            for (i, slot) in blocks {
                // The old slot, if any, frees its extent once no read holds it.
                self.blocks.insert_value(items[i].0, slot);
                results[i] = Some(Ok(()));
            }
        })
    }

    /// Packs pageable sources into staging buffers. Each buffer is filled by one job of
    /// the copy crew while other buffers fill and earlier ones are in DMA; buffers go to
    /// the GPU in order as their copies finish.
    pub(crate) fn upload_staged(
        &self,
        flight: &mut Flight<'_, Vec<(usize, Arc<Slot>)>>,
        staged: &[(usize, Side, Arc<Slot>)],
    ) -> Result<()> {
        self.count(&self.staged_bytes, staged);
        let mut chunker = Chunker::new(staged, self.staging.buffer_len());
        let mut filling: VecDeque<Filling<'_>> = VecDeque::new();
        let outcome = (|| -> Result<()> {
            while !chunker.is_empty() {
                // Wait for a buffer only while holding none (see StagingPool::acquire).
                let lease = if filling.is_empty() {
                    self.staging.acquire()?
                } else if let Some(lease) = self.staging.try_acquire()? {
                    lease
                } else {
                    self.retire_filled(flight, &mut filling)?;
                    continue;
                };
                let base = lease.get().ptr();
                let (pieces, completed) = chunker.next_chunk();
                let mut host = Vec::with_capacity(pieces.len());
                let mut dma = Vec::with_capacity(pieces.len());
                for p in &pieces {
                    let (_, side, slot) = &staged[p.item];
                    host.push(HostCopy {
                        dst: base.wrapping_add(p.buffer_offset),
                        src: (side.addr() as usize + p.item_offset) as *const u8,
                        len: p.len,
                    });
                    dma.push(DmaCopy {
                        dst: self.device_addr(slot) + p.item_offset as u64,
                        src: base as u64 + p.buffer_offset as u64,
                        len: p.len,
                    });
                }
                let done = completed
                    .iter()
                    .map(|&k| (staged[k].0, Arc::clone(&staged[k].2)))
                    .collect();
                // SAFETY: sources are the caller's blocks, borrowed for this call; the
                // destination is the leased buffer, whose last DMA has finished; the
                // ticket lives in `filling`, which is emptied (waited for) before return.
                let ticket = unsafe { self.crew.submit(host) };
                filling.push_back(Filling {
                    ticket,
                    lease,
                    dma,
                    done,
                });
                while filling.front().is_some_and(|f| f.ticket.is_done()) {
                    self.retire_filled(flight, &mut filling)?;
                }
            }
            while !filling.is_empty() {
                self.retire_filled(flight, &mut filling)?;
            }
            Ok(())
        })();
        if outcome.is_err() {
            // Waits for the CPU copies, then for DMAs that may still read the buffers
            // or write extents of slots not yet handed to the flight.
            drop(filling);
            self.engine.drain_all();
        }
        outcome
    }

    /// Sends the oldest filled buffer to the GPU once its CPU copy is done.
    pub(crate) fn retire_filled<'p>(
        &'p self,
        flight: &mut Flight<'_, Vec<(usize, Arc<Slot>)>>,
        filling: &mut VecDeque<Filling<'p>>,
    ) -> Result<()> {
        let Some(filled) = filling.pop_front() else {
            return Ok(());
        };
        filled.ticket.wait();
        let stream = self.engine.pick_stream();
        flight.push_on(stream, &filled.dma, filled.done)?;
        self.release_after(filled.lease, stream)
    }

    /// Marks the lease's buffer busy until the work enqueued on `stream` so far is done,
    /// then returns it to the pool.
    pub(crate) fn release_after(&self, lease: StagingLease<'_>, stream: usize) -> Result<()> {
        if let Err(e) = self.engine.record_into(lease.get().last_use(), stream) {
            // Without the event a later user could overwrite the buffer mid-DMA.
            self.engine.drain_all();
            return Err(e);
        }
        drop(lease);
        Ok(())
    }
}

/// A staging buffer being filled by the copy crew for an upload. Fields drop in order:
/// the ticket waits for the copy before the lease returns the buffer.
pub(crate) struct Filling<'p> {
    pub(crate) ticket: CopyTicket,
    pub(crate) lease: StagingLease<'p>,
    pub(crate) dma: Vec<DmaCopy>,
    pub(crate) done: Vec<(usize, Arc<Slot>)>,
}
