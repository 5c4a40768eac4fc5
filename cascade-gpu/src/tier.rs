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
use crate::driver::{cuda_error, open_context};
use crate::memory::{DeviceSlab, HostKind, HostRegistration, query_device, query_host};
use crate::staging::{CopyCrew, HostCopy, StagingLease, StagingPool};

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
    registered: Vec<(usize, usize)>,
    pinned: Vec<(usize, usize)>,
    device: Vec<(u64, usize)>,
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
                let inside = |&(start, size): &(u64, usize)| {
                    ptr >= start && ptr + len as u64 <= start + size as u64
                };
                if self.device.iter().any(inside) {
                    return Ok(Route::Device);
                }
                match query_device(ptr, len) {
                    Some(range) => {
                        self.device.push(range);
                        Ok(Route::Device)
                    }
                    None => Err(Error::new(
                        ErrorKind::InvalidInput,
                        "address range is not device memory of a CUDA allocation",
                    )
                    .with_context("ptr", format!("{ptr:#x}"))
                    .with_context("bytes", len)),
                }
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

/// A staging buffer whose DMA from the device is in flight: the lease, the CPU copies
/// that empty it once landed, and the (item, length) results they complete.
type InFlight<'p> = (StagingLease<'p>, Vec<HostCopy>, Vec<(usize, usize)>);

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
        let ctx = open_context(config.device_id).map_err(|e| e.with_context("tier", &name))?;
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
        first(self.upload(&[(id, Side::Device { ptr: src, len })]))
    }

    /// Stores many blocks from device memory; one result per item, in order. Items are
    /// `(id, device address, length)`.
    ///
    /// # Safety
    /// As for [`GpuTier::put_from_device`], for every item.
    pub unsafe fn put_from_device_batch(&self, items: &[(BlockId, u64, usize)]) -> Vec<Result<()>> {
        let sides: Vec<(BlockId, Side)> = items
            .iter()
            .map(|&(id, ptr, len)| (id, Side::Device { ptr, len }))
            .collect();
        self.upload(&sides)
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
        first(self.download(&[(
            id,
            Side::Device {
                ptr: dst,
                len: capacity,
            },
        )]))
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
        let sides: Vec<(BlockId, Side)> = items
            .iter()
            .map(|&(id, ptr, len)| (id, Side::Device { ptr, len }))
            .collect();
        self.download(&sides)
    }

    fn router(&self) -> Router {
        let registered = self
            .registered
            .read()
            .iter()
            .map(|r| (r.base(), r.len()))
            .collect();
        Router {
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
        self.upload_staged(&mut flight, staged)?;
        flight.land(|blocks| {
            for (i, slot) in blocks {
                // The old slot, if any, frees its extent once no read holds it.
                self.blocks.insert_value(items[i].0, slot);
                results[i] = Some(Ok(()));
            }
        })
    }

    /// Packs pageable sources into staging buffers; each buffer is filled by the copy
    /// crew while the previous one's DMA runs.
    fn upload_staged(
        &self,
        flight: &mut Flight<'_, Vec<(usize, Arc<Slot>)>>,
        staged: Vec<(usize, Side, Arc<Slot>)>,
    ) -> Result<()> {
        self.count(&self.staged_bytes, &staged);
        let cap = self.staging.buffer_len();
        let mut pending = staged.into_iter().peekable();
        let mut offset = 0usize;
        let outcome = (|| -> Result<()> {
            while pending.peek().is_some() {
                let lease = self.staging.acquire()?;
                let base = lease.get().ptr();
                let mut used = 0usize;
                let mut host = Vec::new();
                let mut dma = Vec::new();
                let mut done = Vec::new();
                while used < cap {
                    let Some((_, side, slot)) = pending.peek() else {
                        break;
                    };
                    let take = (side.len() - offset).min(cap - used);
                    host.push(HostCopy {
                        dst: base.wrapping_add(used),
                        src: (side.addr() as usize + offset) as *const u8,
                        len: take,
                    });
                    dma.push(DmaCopy {
                        dst: self.device_addr(slot) + offset as u64,
                        src: base as u64 + used as u64,
                        len: take,
                    });
                    used += take;
                    offset += take;
                    if offset == side.len() {
                        if let Some((i, _, slot)) = pending.next() {
                            done.push((i, slot));
                        }
                        offset = 0;
                    }
                }
                // SAFETY: sources are the caller's blocks, borrowed for this call; the
                // destination is the leased staging buffer, whose last DMA has finished.
                unsafe { self.crew.copy_all(&host) };
                let stream = self.engine.pick_stream();
                flight.push_on(stream, &dma, done)?;
                self.release_after(lease, stream)?;
            }
            Ok(())
        })();
        if outcome.is_err() {
            // A block split over several buffers may have pieces in flight while its
            // slot is still pending here: let them land before the slot is freed.
            self.engine.drain_all();
        }
        drop(pending);
        outcome
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
        self.download_staged(staged, results)?;
        let landed = flight.land(|blocks| {
            for (i, len) in blocks {
                results[i] = Some(Ok(len));
            }
        });
        drop(held);
        landed
    }

    /// Brings blocks bound for pageable memory through staging buffers: several buffers
    /// are in flight, and each is emptied by the copy crew once its DMA has landed.
    fn download_staged(
        &self,
        staged: Vec<(usize, Side, Arc<Slot>)>,
        results: &mut [Option<Result<usize>>],
    ) -> Result<()> {
        self.count(&self.staged_bytes, &staged);
        let cap = self.staging.buffer_len();
        let mut in_flight: VecDeque<InFlight<'_>> = VecDeque::new();
        let mut pending = staged.iter().peekable();
        let mut offset = 0usize;
        let outcome = (|| -> Result<()> {
            while pending.peek().is_some() {
                // Wait for a buffer only while holding none (see StagingPool::acquire).
                let lease = if in_flight.is_empty() {
                    self.staging.acquire()?
                } else if let Some(lease) = self.staging.try_acquire()? {
                    lease
                } else {
                    self.land_staged(&mut in_flight, results)?;
                    continue;
                };
                let base = lease.get().ptr();
                let mut used = 0usize;
                let mut host = Vec::new();
                let mut dma = Vec::new();
                let mut done = Vec::new();
                while used < cap {
                    let Some(&&(i, side, ref slot)) = pending.peek() else {
                        break;
                    };
                    let take = (slot.len - offset).min(cap - used);
                    dma.push(DmaCopy {
                        dst: base as u64 + used as u64,
                        src: self.device_addr(slot) + offset as u64,
                        len: take,
                    });
                    host.push(HostCopy {
                        dst: (side.addr() as usize + offset) as *mut u8,
                        src: base.wrapping_add(used),
                        len: take,
                    });
                    used += take;
                    offset += take;
                    if offset == slot.len {
                        done.push((i, slot.len));
                        pending.next();
                        offset = 0;
                    }
                }
                let stream = self.engine.pick_stream();
                self.engine.enqueue(stream, &dma)?;
                self.engine.record_into(lease.get().last_use(), stream)?;
                in_flight.push_back((lease, host, done));
            }
            while !in_flight.is_empty() {
                self.land_staged(&mut in_flight, results)?;
            }
            Ok(())
        })();
        if outcome.is_err() {
            // Copies into leased buffers may still run: let them finish before the
            // buffers go back to the pool and the slots are released.
            self.engine.drain_all();
        }
        drop(in_flight);
        outcome
    }

    fn land_staged(
        &self,
        in_flight: &mut VecDeque<InFlight<'_>>,
        results: &mut [Option<Result<usize>>],
    ) -> Result<()> {
        let Some((lease, host, done)) = in_flight.pop_front() else {
            return Ok(());
        };
        lease
            .get()
            .last_use()
            .synchronize()
            .map_err(|e| cuda_error("cuEventSynchronize", e))?;
        // SAFETY: the buffer's DMA has landed; destinations are the caller's output
        // buffers, borrowed mutably for this call and disjoint from the buffer.
        unsafe { self.crew.copy_all(&host) };
        for (i, len) in done {
            results[i] = Some(Ok(len));
        }
        Ok(())
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

/// Fills the items a failed call never reached with a copy of its error.
fn finish<T>(results: Vec<Option<Result<T>>>, outcome: Result<()>) -> Vec<Result<T>> {
    let failure = outcome.err();
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(match &failure {
                    Some(e) => Error::new(e.kind(), e.to_string()),
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
            persistent: false,
            device_memory: true,
            max_block_size: self.allocator.capacity(),
        }
    }

    fn capacity(&self) -> u64 {
        self.allocator.capacity()
    }

    fn used(&self) -> u64 {
        self.allocator.used()
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        first(self.upload(&[(
            id,
            Side::Host {
                ptr: data.as_ptr() as usize,
                len: data.len(),
            },
        )]))
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        first(self.download(&[(
            id,
            Side::Host {
                ptr: out.as_mut_ptr() as usize,
                len: out.len(),
            },
        )]))
    }

    fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<()>> {
        let sides: Vec<(BlockId, Side)> = items
            .iter()
            .map(|(id, data)| {
                (
                    *id,
                    Side::Host {
                        ptr: data.as_ptr() as usize,
                        len: data.len(),
                    },
                )
            })
            .collect();
        self.upload(&sides)
    }

    fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<usize>> {
        let sides: Vec<(BlockId, Side)> = items
            .iter_mut()
            .map(|(id, out)| {
                (
                    *id,
                    Side::Host {
                        ptr: out.as_mut_ptr() as usize,
                        len: out.len(),
                    },
                )
            })
            .collect();
        self.download(&sides)
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
        let mut ids = Vec::new();
        self.blocks.for_each(|id, _| ids.push(*id));
        for id in ids {
            self.blocks.remove_value(&id);
        }
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
