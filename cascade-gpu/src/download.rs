//! Download: blocks copied out of the slab, by DMA straight into device, pinned or
//! registered memory, or through the staging buffers into pageable memory (the copy
//! crew empties one landed buffer while the next one's DMA runs).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cascade_core::tier::buffer_too_small;
use cascade_core::{BlockId, Error, Result};

use crate::checksum::finish_checksums;
use crate::chunker::Chunker;
use crate::copy::{DmaCopy, Flight};
use crate::driver::cuda_error;
use crate::group::Grouper;
use crate::results::finish;
use crate::route::{Route, Side};
use crate::slot::Slot;
use crate::staging::{CopyTicket, HostCopy, StagingLease};
use crate::tier::GpuTier;

impl GpuTier {
    /// Copies each block into its destination; one result (the length) per item.
    pub(crate) fn download(&self, items: &[(BlockId, Side)]) -> Vec<Result<usize>> {
        let mut results: Vec<Option<Result<usize>>> = items.iter().map(|_| None).collect();
        let outcome = self.download_into(items, &mut results, None);
        finish(results, outcome)
    }

    /// [`GpuTier::download`] that also hashes, on the device while they are copied,
    /// the blocks bound for host memory that the DMA reaches directly; one checksum per
    /// item (`None` for the others, and where the kernel is missing or failed).
    pub(crate) fn download_hashed(
        &self,
        items: &[(BlockId, Side)],
    ) -> (Vec<Result<usize>>, Vec<Option<u64>>) {
        let mut results: Vec<Option<Result<usize>>> = items.iter().map(|_| None).collect();
        let mut checksums = vec![None; items.len()];
        let outcome = self.download_into(items, &mut results, Some(&mut checksums));
        (finish(results, outcome), checksums)
    }

    /// Copies each block into its destination, recording each item's result; with
    /// `checksums`, also hashes the direct host-bound blocks there (see
    /// [`GpuTier::download_hashed`]).
    pub(crate) fn download_into(
        &self,
        items: &[(BlockId, Side)],
        results: &mut [Option<Result<usize>>],
        checksums: Option<&mut [Option<u64>]>,
    ) -> Result<()> {
        self.engine.bind()?;
        let mut router = self.router();
        let group = self.engine.group();
        // Holding the slots keeps every extent read here allocated until the copies land.
        let mut held: Vec<Arc<Slot>> = Vec::with_capacity(items.len());
        let mut flight: Flight<'_, Vec<(usize, usize)>> = Flight::new(&self.engine);
        let mut host = Grouper::new(false, group);
        let mut device = Grouper::new(true, group);
        let mut staged: Vec<(usize, Side, Arc<Slot>)> = Vec::new();
        let mut direct = 0u64;
        let mut hashed: Vec<(usize, (u64, usize))> = Vec::new();
        for (i, &(id, side)) in items.iter().enumerate() {
            let Some(slot) = self.blocks.with(&id, Arc::clone) else {
                results[i] = Some(Err(Error::not_found(id)));
                continue;
            };
            if side.len() < slot.len {
                results[i] = Some(Err(buffer_too_small(id, slot.len as u64, side.len())));
                continue;
            }
            let route = match router.route(side) {
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
                Ok(route) => route,
            };
            let copy = DmaCopy {
                dst: side.addr(),
                src: self.device_addr(&slot),
                len: slot.len,
            };
            match route {
                Route::Staged => {
                    staged.push((i, side, slot));
                    continue;
                }
                Route::Direct => {
                    if checksums.is_some() {
                        hashed.push((i, (copy.src, slot.len)));
                    }
                    host.add(&mut flight, copy, (i, slot.len))?;
                }
                Route::Device => device.add(&mut flight, copy, (i, slot.len))?,
            }
            direct += slot.len as u64;
            held.push(slot);
        }
        host.flush(&mut flight)?;
        device.flush(&mut flight)?;
        let blocks: Vec<(u64, usize)> = hashed.iter().map(|&(_, block)| block).collect();
        let pending = match (&checksums, self.engine.checksum_kernel()) {
            // SAFETY: `held` keeps every hashed extent allocated until the pending
            // checksums are finished (or dropped, which waits for the kernel); the
            // store's stripe locks keep the blocks from being rewritten meanwhile.
            (Some(_), Some(kernel)) => unsafe { kernel.start(&blocks) }
                .inspect_err(|e| tracing::warn!(tier = %self.name, error = %e, "checksum kernel launch failed"))
                .ok(),
            _ => None,
        };
        self.direct_bytes.fetch_add(direct, Ordering::Relaxed);
        self.download_staged(&staged, results)?;
        let landed = flight.land(|blocks| {
            for (i, len) in blocks {
                results[i] = Some(Ok(len));
            }
        });
        if let Some(checksums) = checksums {
            for (&(i, _), checksum) in hashed.iter().zip(finish_checksums(pending, blocks.len())) {
                checksums[i] = checksum;
            }
        }
        drop(held);
        landed
    }

    /// Brings blocks bound for pageable memory through staging buffers: several buffers
    /// are in DMA at once, and each is emptied by one job of the copy crew as soon as its
    /// DMA has landed.
    pub(crate) fn download_staged(
        &self,
        staged: &[(usize, Side, Arc<Slot>)],
        results: &mut [Option<Result<usize>>],
    ) -> Result<()> {
        self.count(&self.staged_bytes, staged);
        let mut chunker = Chunker::new(staged, self.staging.buffer_len());
        let mut landing: VecDeque<Landing<'_>> = VecDeque::new();
        let mut draining: VecDeque<Draining<'_>> = VecDeque::new();
        let outcome = (|| -> Result<()> {
            while !chunker.is_empty() {
                // Wait for a buffer only while holding none (see StagingPool::acquire).
                let lease = if landing.is_empty() && draining.is_empty() {
                    self.staging.acquire()?
                } else if let Some(lease) = self.staging.try_acquire()? {
                    lease
                } else {
                    self.progress(&mut landing, &mut draining, results, true)?;
                    continue;
                };
                let base = lease.get().ptr();
                let (pieces, completed) = chunker.next_chunk();
                let mut host = Vec::with_capacity(pieces.len());
                let mut dma = Vec::with_capacity(pieces.len());
                for p in &pieces {
                    let (_, side, slot) = &staged[p.item];
                    dma.push(DmaCopy {
                        dst: base as u64 + p.buffer_offset as u64,
                        src: self.device_addr(slot) + p.item_offset as u64,
                        len: p.len,
                    });
                    host.push(HostCopy {
                        dst: (side.addr() as usize + p.item_offset) as *mut u8,
                        src: base.wrapping_add(p.buffer_offset),
                        len: p.len,
                    });
                }
                let done = completed
                    .iter()
                    .map(|&k| (staged[k].0, staged[k].2.len))
                    .collect();
                let stream = self.engine.pick_stream();
                // The lease joins `landing` first, so an error below still drains it.
                landing.push_back(Landing { lease, host, done });
                self.engine.enqueue(stream, &dma)?;
                if let Some(l) = landing.back() {
                    self.engine.record_into(l.lease.get().last_use(), stream)?;
                }
                self.progress(&mut landing, &mut draining, results, false)?;
            }
            while !landing.is_empty() || !draining.is_empty() {
                self.progress(&mut landing, &mut draining, results, true)?;
            }
            Ok(())
        })();
        if outcome.is_err() {
            // DMAs may still write leased buffers and CPU copies read them: both must
            // finish before the buffers go back to the pool.
            self.engine.drain_all();
            drop(draining);
            drop(landing);
        }
        outcome
    }

    /// Starts the CPU copy of every buffer whose DMA has landed and retires finished
    /// copies; when `block` is set and nothing was ready, waits for the oldest step.
    pub(crate) fn progress<'p>(
        &'p self,
        landing: &mut VecDeque<Landing<'p>>,
        draining: &mut VecDeque<Draining<'p>>,
        results: &mut [Option<Result<usize>>],
        block: bool,
    ) -> Result<()> {
        let mut moved = false;
        while let Some(front) = landing.front() {
            let landed = front
                .lease
                .get()
                .last_use()
                .try_is_complete()
                .map_err(|e| cuda_error("cuEventQuery", e))?;
            if !landed {
                break;
            }
            self.start_drain(landing, draining);
            moved = true;
        }
        while draining.front().is_some_and(|d| d.ticket.is_done()) {
            retire_drained(draining, results);
            moved = true;
        }
        if block && !moved {
            // Starting CPU copies early keeps the crew busy; retiring frees a buffer.
            if let Some(front) = landing.front() {
                front
                    .lease
                    .get()
                    .last_use()
                    .synchronize()
                    .map_err(|e| cuda_error("cuEventSynchronize", e))?;
                self.start_drain(landing, draining);
            } else {
                retire_drained(draining, results);
            }
        }
        Ok(())
    }

    /// Hands the oldest landed buffer to the copy crew.
    pub(crate) fn start_drain<'p>(
        &'p self,
        landing: &mut VecDeque<Landing<'p>>,
        draining: &mut VecDeque<Draining<'p>>,
    ) {
        if let Some(Landing { lease, host, done }) = landing.pop_front() {
            // SAFETY: the buffer's DMA has landed; destinations are the caller's output
            // buffers, borrowed mutably for this call and disjoint from each other; the
            // ticket lives in `draining`, emptied (waited for) before the call returns.
            let ticket = unsafe { self.crew.submit(host) };
            draining.push_back(Draining {
                ticket,
                _lease: lease,
                done,
            });
        }
    }
}

/// Waits for the oldest drain and records its blocks as read.
fn retire_drained(draining: &mut VecDeque<Draining<'_>>, results: &mut [Option<Result<usize>>]) {
    if let Some(drained) = draining.pop_front() {
        drained.ticket.wait();
        for (i, len) in drained.done {
            results[i] = Some(Ok(len));
        }
    }
}

/// A staging buffer whose DMA from the device is in flight, with the CPU copies that
/// will empty it and the (item, length) results they complete.
pub(crate) struct Landing<'p> {
    pub(crate) lease: StagingLease<'p>,
    pub(crate) host: Vec<HostCopy>,
    pub(crate) done: Vec<(usize, usize)>,
}

/// A landed staging buffer being emptied by the copy crew.
pub(crate) struct Draining<'p> {
    pub(crate) ticket: CopyTicket,
    /// Held, not read: the buffer returns to the pool when this drops, after the ticket.
    pub(crate) _lease: StagingLease<'p>,
    pub(crate) done: Vec<(usize, usize)>,
}
