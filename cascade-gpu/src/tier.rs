//! [`GpuTier`]: blocks in one device slab, moved over PCIe in batches.
//!
//! Routes per buffer: device memory, pinned host memory and registered host memory (the
//! pool of the tier below) are copied by DMA directly; pageable host memory goes through
//! the pinned staging pool, copied by several threads while the previous buffer's DMA
//! runs. Every block's extent is owned by an `Arc<Slot>`: a read in flight holds a
//! clone, so a concurrent remove or replace frees the extent only once the read's copy
//! has landed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::tier::{
    Capability, HostRegion, Tier, buffer_too_small, check_block_fits, tier_full,
};
use cascade_core::{BlockId, Error, ErrorKind, Extent, ExtentAllocator, Result, ShardedIndex};
use cudarc::driver::CudaContext;
use parking_lot::RwLock;

use crate::config::GpuTierConfig;
use crate::copy::{CopyEngine, DmaCopy, Flight};
use crate::driver::cuda_error;
use crate::memory::{
    DeviceRange, DeviceSlab, HostKind, HostRegistration, query_device, query_host,
};
use crate::staging::{CopyCrew, CopyTicket, HostCopy, StagingLease, StagingPool};

/// The kind string of this tier.
pub const KIND: &str = "gpu";

/// Device allocations are rounded to 256 bytes: the alignment CUDA gives `cuMemAlloc`,
/// which keeps every block's DMA on full-width transactions.
pub const ALIGNMENT: u64 = 256;

/// A block's extent in the slab; frees it when the last holder lets go.
struct Slot {
    extent: Extent,
    len: usize,
    allocator: Arc<ExtentAllocator>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.allocator.free(self.extent);
    }
}

/// One side of a transfer, outside the tier.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// Host memory: `len` bytes at `ptr` (a block to store, or room to read into).
    Host { ptr: usize, len: usize },
    /// Device memory of any GPU, as a unified address.
    Device { ptr: u64, len: usize },
}

impl Side {
    fn host(ptr: *const u8, len: usize) -> Self {
        Side::Host {
            ptr: ptr as usize,
            len,
        }
    }

    /// `(id, device address, length)` items as device sides.
    fn devices(items: &[(BlockId, u64, usize)]) -> Vec<(BlockId, Side)> {
        items
            .iter()
            .map(|&(id, ptr, len)| (id, Side::Device { ptr, len }))
            .collect()
    }

    fn len(self) -> usize {
        match self {
            Side::Host { len, .. } | Side::Device { len, .. } => len,
        }
    }

    fn addr(self) -> u64 {
        match self {
            Side::Host { ptr, .. } => ptr as u64,
            Side::Device { ptr, .. } => ptr,
        }
    }
}

/// How a buffer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// DMA between host memory the GPU can reach (pinned or registered) and the slab.
    Direct,
    /// Through a pinned staging buffer (pageable host memory).
    Staged,
    /// Device to device, in the copy kernel.
    Device,
}

/// Pinned and device allocations met so far in one call, so that a batch of blocks in
/// one allocation asks the driver once.
struct Router {
    /// The tier's own GPU: only its memory goes through the copy kernel.
    ordinal: i32,
    registered: Vec<(usize, usize)>,
    pinned: Vec<(usize, usize)>,
    device: Vec<DeviceRange>,
}

impl Router {
    fn route(&mut self, side: Side) -> Result<Route> {
        match side {
            Side::Host { len: 0, .. } => Ok(Route::Direct),
            Side::Host { ptr, len } => {
                let inside =
                    |&(start, size): &(usize, usize)| ptr >= start && ptr + len <= start + size;
                if self.registered.iter().any(inside) || self.pinned.iter().any(inside) {
                    return Ok(Route::Direct);
                }
                match query_host(ptr, len) {
                    (HostKind::Pinned, range) => {
                        self.pinned.extend(range);
                        Ok(Route::Direct)
                    }
                    (HostKind::Pageable, _) => Ok(Route::Staged),
                }
            }
            Side::Device { len: 0, .. } => Ok(Route::Device),
            Side::Device { ptr, len } => {
                let known = self.device.iter().find(|r| r.covers(ptr, len)).copied();
                let range = match known.or_else(|| query_device(ptr, len)) {
                    Some(range) => range,
                    None => {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            "address range is not device memory of a CUDA allocation",
                        )
                        .with_context("ptr", format!("{ptr:#x}"))
                        .with_context("bytes", len));
                    }
                };
                if known.is_none() {
                    self.device.push(range);
                }
                // Another GPU's memory is not mapped here: the driver's copies reach it
                // (peer to peer or through the host), the kernel would fault.
                Ok(if range.ordinal == self.ordinal {
                    Route::Device
                } else {
                    Route::Direct
                })
            }
        }
    }
}

/// Copies gathered into groups of the engine's size; each full group goes into the
/// flight with the payload of its items.
struct Grouper<T> {
    device: bool,
    copies: Vec<DmaCopy>,
    payload: Vec<T>,
    group: usize,
}

impl<T> Grouper<T> {
    fn new(device: bool, group: usize) -> Self {
        Self {
            device,
            copies: Vec::with_capacity(group),
            payload: Vec::with_capacity(group),
            group,
        }
    }

    fn add(&mut self, flight: &mut Flight<'_, Vec<T>>, copy: DmaCopy, item: T) -> Result<()> {
        self.copies.push(copy);
        self.payload.push(item);
        if self.copies.len() >= self.group {
            self.flush(flight)
        } else {
            Ok(())
        }
    }

    fn flush(&mut self, flight: &mut Flight<'_, Vec<T>>) -> Result<()> {
        if self.copies.is_empty() {
            return Ok(());
        }
        let payload = std::mem::replace(&mut self.payload, Vec::with_capacity(self.group));
        let pushed = if self.device {
            flight.push_device(&self.copies, payload)
        } else {
            flight.push(&self.copies, payload)
        };
        self.copies.clear();
        pushed
    }
}

/// The GPU HBM tier.
pub struct GpuTier {
    name: String,
    config: GpuTierConfig,
    card: String,
    engine: CopyEngine,
    staging: StagingPool,
    crew: CopyCrew,
    registered: RwLock<Vec<HostRegistration>>,
    staged_bytes: AtomicU64,
    direct_bytes: AtomicU64,
    blocks: ShardedIndex<Arc<Slot>>,
    allocator: Arc<ExtentAllocator>,
    slab: DeviceSlab,
    ctx: Arc<CudaContext>,
}

impl GpuTier {
    /// Opens a GPU tier: loads the driver, allocates the device slab, the staging
    /// buffers and the streams.
    ///
    /// Errors: [`ErrorKind::Unavailable`] when there is no CUDA driver, no GPU, or not
    /// enough free device memory; [`ErrorKind::Config`] for invalid settings.
    pub fn open(name: impl Into<String>, config: &GpuTierConfig) -> Result<Self> {
        let name = name.into();
        config
            .validate()
            .map_err(|e| e.with_context("tier", &name))?;
        let capacity = usize::try_from(config.capacity.as_u64()).map_err(|_| {
            Error::config("capacity exceeds the address space").with_context("tier", &name)
        })?;
        // The device's shared context (the store's host-tier copies use it too).
        let ctx = crate::hub::DeviceContext::get(config.device_id)
            .map_err(|e| e.with_context("tier", &name))?
            .context()
            .clone();
        let card = ctx
            .name()
            .unwrap_or_else(|_| format!("CUDA device {}", config.device_id));
        let slab = DeviceSlab::new(&ctx, capacity).map_err(|e| e.with_context("tier", &name))?;
        let engine = CopyEngine::new(&ctx, config.streams, config.batch_group)?;
        let staging = StagingPool::new(
            &ctx,
            config.staging_buffers,
            config.staging_buffer_size.as_u64() as usize,
        )?;
        let crew = CopyCrew::new(config.resolved_copy_threads())?;
        tracing::info!(tier = %name, %card, capacity, batch_copy = engine.uses_batch_copy(), "GPU tier opened");
        Ok(Self {
            name,
            config: config.clone(),
            card,
            engine,
            staging,
            crew,
            registered: RwLock::new(Vec::new()),
            staged_bytes: AtomicU64::new(0),
            direct_bytes: AtomicU64::new(0),
            blocks: ShardedIndex::new(),
            allocator: Arc::new(ExtentAllocator::new(slab.len() as u64, ALIGNMENT)),
            slab,
            ctx,
        })
    }

    /// The card's name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3").
    pub fn card(&self) -> &str {
        &self.card
    }

    /// The settings the tier was opened with.
    pub fn config(&self) -> &GpuTierConfig {
        &self.config
    }

    /// Whether copies are issued with `cuMemcpyBatchAsync` (driver for CUDA 12.8 or
    /// newer) rather than one `cuMemcpyAsync` each.
    pub fn uses_batch_copy(&self) -> bool {
        self.engine.uses_batch_copy()
    }

    /// Whether device-to-device copies (the `*_device` methods) run in the tier's own
    /// copy kernel rather than the driver's copies.
    pub fn uses_copy_kernel(&self) -> bool {
        self.engine.uses_copy_kernel()
    }

    /// Bytes of host memory registered with CUDA through [`Tier::attach_below`].
    pub fn registered_bytes(&self) -> usize {
        self.registered
            .read()
            .iter()
            .map(HostRegistration::len)
            .sum()
    }

    /// Bytes moved through the pinned staging buffers so far (sources or destinations
    /// in pageable memory).
    pub fn staged_bytes(&self) -> u64 {
        self.staged_bytes.load(Ordering::Relaxed)
    }

    /// Bytes moved by DMA straight to or from the caller's memory so far (device,
    /// pinned or registered memory).
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes.load(Ordering::Relaxed)
    }

    fn count(&self, counter: &AtomicU64, items: &[(usize, Side, Arc<Slot>)]) {
        let bytes: usize = items.iter().map(|(_, side, _)| side.len()).sum();
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Stores a block copied from device memory (a KV block an engine holds on a GPU).
    ///
    /// Errors as [`Tier::put`], and [`ErrorKind::InvalidInput`] when the range is not
    /// inside one CUDA device allocation.
    ///
    /// # Safety
    /// `[src, src + len)` must be device memory that nothing writes until this returns.
    pub unsafe fn put_from_device(&self, id: BlockId, src: u64, len: usize) -> Result<()> {
        // SAFETY: the caller's contract, for the one item.
        first(unsafe { self.put_from_device_batch(&[(id, src, len)]) })
    }

    /// Stores many blocks from device memory; one result per item, in order. Items are
    /// `(id, device address, length)`.
    ///
    /// # Safety
    /// As for [`GpuTier::put_from_device`], for every item.
    pub unsafe fn put_from_device_batch(&self, items: &[(BlockId, u64, usize)]) -> Vec<Result<()>> {
        self.upload(&Side::devices(items))
    }

    /// Copies a block into device memory of `capacity` bytes at `dst`; returns its length.
    ///
    /// Errors as [`Tier::get`], and [`ErrorKind::InvalidInput`] when the range is not
    /// inside one CUDA device allocation.
    ///
    /// # Safety
    /// `[dst, dst + capacity)` must be device memory that the caller owns and that
    /// nothing else reads or writes until this returns.
    pub unsafe fn get_into_device(&self, id: BlockId, dst: u64, capacity: usize) -> Result<usize> {
        // SAFETY: the caller's contract, for the one item.
        first(unsafe { self.get_into_device_batch(&[(id, dst, capacity)]) })
    }

    /// Copies many blocks into device memory; one result (the length) per item, in
    /// order. Items are `(id, device address, capacity)`.
    ///
    /// # Safety
    /// As for [`GpuTier::get_into_device`], for every item; the ranges must not overlap.
    pub unsafe fn get_into_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<usize>> {
        self.download(&Side::devices(items))
    }

    fn router(&self) -> Router {
        let registered = self
            .registered
            .read()
            .iter()
            .map(|r| (r.base(), r.len()))
            .collect();
        Router {
            ordinal: self.config.device_id as i32,
            registered,
            pinned: Vec::new(),
            device: Vec::new(),
        }
    }

    fn device_addr(&self, slot: &Slot) -> u64 {
        self.slab.ptr() + slot.extent.offset
    }

    fn reserve(&self, len: usize) -> Result<Arc<Slot>> {
        check_block_fits(&self.name, len as u64, self.allocator.capacity())?;
        let extent = self.allocator.allocate(len as u64).ok_or_else(|| {
            tier_full(
                &self.name,
                len as u64,
                self.allocator.used(),
                self.allocator.capacity(),
            )
        })?;
        Ok(Arc::new(Slot {
            extent,
            len,
            allocator: Arc::clone(&self.allocator),
        }))
    }

    /// Copies each source into a fresh extent and publishes the blocks once landed.
    fn upload(&self, items: &[(BlockId, Side)]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = items.iter().map(|_| None).collect();
        let outcome = self.upload_into(items, &mut results);
        finish(results, outcome)
    }

    fn upload_into(
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
    fn upload_staged(
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
    fn retire_filled<'p>(
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
    fn release_after(&self, lease: StagingLease<'_>, stream: usize) -> Result<()> {
        if let Err(e) = self.engine.record_into(lease.get().last_use(), stream) {
            // Without the event a later user could overwrite the buffer mid-DMA.
            self.engine.drain_all();
            return Err(e);
        }
        drop(lease);
        Ok(())
    }

    /// Copies each block into its destination; one result (the length) per item.
    fn download(&self, items: &[(BlockId, Side)]) -> Vec<Result<usize>> {
        let mut results: Vec<Option<Result<usize>>> = items.iter().map(|_| None).collect();
        let outcome = self.download_into(items, &mut results);
        finish(results, outcome)
    }

    fn download_into(
        &self,
        items: &[(BlockId, Side)],
        results: &mut [Option<Result<usize>>],
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
                Route::Direct => host.add(&mut flight, copy, (i, slot.len))?,
                Route::Device => device.add(&mut flight, copy, (i, slot.len))?,
            }
            direct += slot.len as u64;
            held.push(slot);
        }
        host.flush(&mut flight)?;
        device.flush(&mut flight)?;
        self.direct_bytes.fetch_add(direct, Ordering::Relaxed);
        self.download_staged(&staged, results)?;
        let landed = flight.land(|blocks| {
            for (i, len) in blocks {
                results[i] = Some(Ok(len));
            }
        });
        drop(held);
        landed
    }

    /// Brings blocks bound for pageable memory through staging buffers: several buffers
    /// are in DMA at once, and each is emptied by one job of the copy crew as soon as its
    /// DMA has landed.
    fn download_staged(
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
    fn progress<'p>(
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
    fn start_drain<'p>(
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

/// A staging buffer being filled by the copy crew for an upload. Fields drop in order:
/// the ticket waits for the copy before the lease returns the buffer.
struct Filling<'p> {
    ticket: CopyTicket,
    lease: StagingLease<'p>,
    dma: Vec<DmaCopy>,
    done: Vec<(usize, Arc<Slot>)>,
}

/// A staging buffer whose DMA from the device is in flight, with the CPU copies that
/// will empty it and the (item, length) results they complete.
struct Landing<'p> {
    lease: StagingLease<'p>,
    host: Vec<HostCopy>,
    done: Vec<(usize, usize)>,
}

/// A landed staging buffer being emptied by the copy crew.
struct Draining<'p> {
    ticket: CopyTicket,
    /// Held, not read: the buffer returns to the pool when this drops, after the ticket.
    _lease: StagingLease<'p>,
    done: Vec<(usize, usize)>,
}

/// One piece of a chunk: `len` bytes at `item_offset` of staged item `item`, placed at
/// `buffer_offset` in the staging buffer.
struct Piece {
    item: usize,
    item_offset: usize,
    buffer_offset: usize,
    len: usize,
}

/// Cuts staged items into staging-buffer-sized chunks, splitting items that straddle a
/// buffer boundary.
struct Chunker<'a> {
    items: &'a [(usize, Side, Arc<Slot>)],
    capacity: usize,
    next: usize,
    offset: usize,
}

impl<'a> Chunker<'a> {
    fn new(items: &'a [(usize, Side, Arc<Slot>)], capacity: usize) -> Self {
        Self {
            items,
            capacity,
            next: 0,
            offset: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.next >= self.items.len()
    }

    /// The pieces of the next chunk, and the items whose last piece is among them.
    fn next_chunk(&mut self) -> (Vec<Piece>, Vec<usize>) {
        let (mut pieces, mut completed) = (Vec::new(), Vec::new());
        let mut used = 0;
        while used < self.capacity && !self.is_empty() {
            let len = self.items[self.next].2.len;
            let take = (len - self.offset).min(self.capacity - used);
            if take > 0 {
                pieces.push(Piece {
                    item: self.next,
                    item_offset: self.offset,
                    buffer_offset: used,
                    len: take,
                });
            }
            used += take;
            self.offset += take;
            if self.offset == len {
                completed.push(self.next);
                self.next += 1;
                self.offset = 0;
            }
        }
        (pieces, completed)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// The one result of a one-item batch.
fn first<T>(results: Vec<Result<T>>) -> Result<T> {
    results
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(Error::new(ErrorKind::InvalidInput, "empty batch")))
}

/// Fills the items a failed call never reached with its error.
fn finish<T>(results: Vec<Option<Result<T>>>, outcome: Result<()>) -> Vec<Result<T>> {
    let failure = outcome.err();
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(match &failure {
                    Some(e) => e.clone(),
                    None => Error::new(ErrorKind::Io, "copy was not completed"),
                })
            })
        })
        .collect()
}

impl Drop for GpuTier {
    fn drop(&mut self) {
        // Nothing is in flight once every call has returned, but a panic in a caller
        // could leave copies running; they must land before memory is freed below.
        if self.engine.bind().is_ok() {
            self.engine.drain_all();
        }
    }
}

impl Tier for GpuTier {
    fn kind(&self) -> &str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn capability(&self) -> Capability {
        Capability {
            device_memory: true,
            device: Some(self.config.device_id),
            // Batches go out as batched copies over several streams.
            batch_native: true,
            max_block_size: self.allocator.capacity(),
            ..Capability::default()
        }
    }

    fn capacity(&self) -> u64 {
        self.allocator.capacity()
    }

    fn used(&self) -> u64 {
        self.allocator.used()
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        first(self.put_batch(&[(id, data)]))
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        first(self.get_batch(&mut [(id, out)]))
    }

    fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<()>> {
        let sides: Vec<(BlockId, Side)> = items
            .iter()
            .map(|(id, data)| (*id, Side::host(data.as_ptr(), data.len())))
            .collect();
        self.upload(&sides)
    }

    fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<usize>> {
        let sides: Vec<(BlockId, Side)> = items
            .iter_mut()
            .map(|(id, out)| (*id, Side::host(out.as_mut_ptr(), out.len())))
            .collect();
        self.download(&sides)
    }

    unsafe fn put_from_device(&self, id: BlockId, src: u64, len: usize) -> Result<()> {
        // SAFETY: the trait's contract is the inherent function's.
        unsafe { GpuTier::put_from_device(self, id, src, len) }
    }

    unsafe fn get_into_device(&self, id: BlockId, dst: u64, capacity: usize) -> Result<usize> {
        // SAFETY: the trait's contract is the inherent function's.
        unsafe { GpuTier::get_into_device(self, id, dst, capacity) }
    }

    unsafe fn put_from_device_batch(&self, items: &[(BlockId, u64, usize)]) -> Vec<Result<()>> {
        // SAFETY: the trait's contract is the inherent function's.
        unsafe { GpuTier::put_from_device_batch(self, items) }
    }

    unsafe fn get_into_device_batch(&self, items: &[(BlockId, u64, usize)]) -> Vec<Result<usize>> {
        // SAFETY: the trait's contract is the inherent function's.
        unsafe { GpuTier::get_into_device_batch(self, items) }
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.blocks.with(&id, |slot| slot.len as u64)
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        Ok(self.blocks.remove_value(&id).is_some())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        // Each slot frees its extent once no read in flight holds it.
        self.blocks.clear_all();
        Ok(())
    }

    fn ids(&self) -> Vec<(BlockId, u64)> {
        let mut ids = Vec::new();
        self.blocks
            .for_each(|id, slot| ids.push((*id, slot.len as u64)));
        ids
    }

    fn host_region(&self) -> Option<HostRegion> {
        None
    }

    /// Registers the host memory of the tier below with CUDA (unless `register_below`
    /// is off), so that demotions and promotions between the two are one DMA.
    ///
    /// A region the driver refuses (for example a pool file on a disk file system, whose
    /// pages Linux will not pin for long) is logged and left unregistered: moves to and
    /// from it then go through the staging buffers, slower but correct.
    ///
    /// The tier below must outlive this tier (a [`cascade_core::CascadeStore`] drops its
    /// tiers fastest first), since the registration is released when this tier drops.
    fn attach_below(&self, below: &dyn Tier) -> Result<()> {
        let Some(region) = below.host_region().filter(|_| self.config.register_below) else {
            return Ok(());
        };
        // Whole pages only: blocks on a partial page at either end take the staged path.
        let page = page_size();
        let start = (region.base as usize).next_multiple_of(page);
        let end = (region.base as usize + region.len) / page * page;
        if end <= start {
            return Ok(());
        }
        let mut registered = self.registered.write();
        if registered.iter().any(|r| r.base() == start) {
            return Ok(());
        }
        self.engine.bind()?;
        // SAFETY: [start, end) lies inside the region of the tier below, which stays
        // mapped while that tier lives; it outlives this tier (see above), and this tier
        // drops the registration first.
        match unsafe { HostRegistration::new(&self.ctx, start as *mut u8, end - start) } {
            Ok(registration) => {
                tracing::info!(tier = %self.name, below = below.name(), bytes = end - start,
                    "registered the host memory of the tier below with CUDA");
                registered.push(registration);
            }
            Err(e) => {
                tracing::warn!(tier = %self.name, below = below.name(), error = %e,
                    "could not register the host memory of the tier below; moves to it are staged");
            }
        }
        Ok(())
    }

    fn extra_stats(&self) -> Vec<(String, f64)> {
        vec![
            ("fragmentation".into(), self.allocator.fragmentation()),
            ("registered_bytes".into(), self.registered_bytes() as f64),
            ("staged_bytes".into(), self.staged_bytes() as f64),
            ("direct_bytes".into(), self.direct_bytes() as f64),
            (
                "batch_copy".into(),
                f64::from(u8::from(self.uses_batch_copy())),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(lens: &[usize]) -> Vec<(usize, Side, Arc<Slot>)> {
        let allocator = Arc::new(ExtentAllocator::new(1 << 20, ALIGNMENT));
        lens.iter()
            .enumerate()
            .map(|(i, &len)| {
                let extent = allocator.allocate(len as u64).unwrap();
                let slot = Arc::new(Slot {
                    extent,
                    len,
                    allocator: Arc::clone(&allocator),
                });
                (
                    i * 10,
                    Side::Host {
                        ptr: 4096 * (i + 1),
                        len,
                    },
                    slot,
                )
            })
            .collect()
    }

    #[test]
    fn chunker_covers_every_byte_once_and_completes_items_in_order() {
        let items = staged(&[3, 10, 0, 5, 4]);
        let mut chunker = Chunker::new(&items, 4);
        let mut covered = vec![Vec::new(); items.len()];
        let mut completed = Vec::new();
        while !chunker.is_empty() {
            let (pieces, done) = chunker.next_chunk();
            let mut end = 0;
            for p in &pieces {
                assert_eq!(p.buffer_offset, end, "pieces are packed");
                end += p.len;
                covered[p.item].push((p.item_offset, p.len));
            }
            assert!(end <= 4);
            completed.extend(done);
        }
        assert_eq!(completed, vec![0, 1, 2, 3, 4]);
        for (k, (_, side, _)) in items.iter().enumerate() {
            let mut next = 0;
            for &(offset, len) in &covered[k] {
                assert_eq!(offset, next);
                next += len;
            }
            assert_eq!(next, side.len());
        }
    }

    #[test]
    fn slots_free_their_extent_when_the_last_holder_drops() {
        let items = staged(&[1000]);
        let allocator = Arc::clone(&items[0].2.allocator);
        assert_eq!(allocator.used(), 1024);
        let reader = Arc::clone(&items[0].2);
        drop(items);
        assert_eq!(allocator.used(), 1024, "a read in flight keeps the extent");
        drop(reader);
        assert_eq!(allocator.used(), 0);
    }
}
