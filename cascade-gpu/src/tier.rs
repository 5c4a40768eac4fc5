//! [`GpuTier`]: blocks in one device slab, moved over PCIe in batches.
//!
//! This file holds the tier's state and its thin [`Tier`] implementation; each job has a
//! file of its own: `route` (how a buffer is reached: device, pinned or registered
//! memory by DMA directly, pageable memory through the pinned staging pool), `upload`
//! and `download` (the two directions, staged copies run by several threads while the
//! previous buffer's DMA runs), `chunker` (staged items cut into staging buffers),
//! `group` (DMA copies into the engine's batches), `slot` (a block's extent, owned by an
//! `Arc<Slot>`: a read in flight holds a clone, so a concurrent remove or replace frees
//! the extent only once the read's copy has landed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::tier::{Capability, HostRegion, Tier, check_block_fits, tier_full};
use cascade_core::{BlockId, Error, ExtentAllocator, Result, ShardedIndex};
use cudarc::driver::CudaContext;
use parking_lot::RwLock;

use crate::config::GpuTierConfig;
use crate::copy::CopyEngine;
use crate::memory::{DeviceSlab, HostRegistration};
use crate::results::first;
use crate::route::{Router, Side};
use crate::slot::Slot;
use crate::staging::{CopyCrew, StagingPool};

/// The kind string of this tier.
pub const KIND: &str = "gpu";

/// Device allocations are rounded to 256 bytes: the alignment CUDA gives `cuMemAlloc`,
/// which keeps every block's DMA on full-width transactions.
pub const ALIGNMENT: u64 = 256;

/// The GPU HBM tier.
pub struct GpuTier {
    pub(crate) name: String,
    pub(crate) config: GpuTierConfig,
    pub(crate) card: String,
    pub(crate) engine: CopyEngine,
    pub(crate) staging: StagingPool,
    pub(crate) crew: CopyCrew,
    pub(crate) registered: RwLock<Vec<HostRegistration>>,
    pub(crate) staged_bytes: AtomicU64,
    pub(crate) direct_bytes: AtomicU64,
    pub(crate) blocks: ShardedIndex<Arc<Slot>>,
    pub(crate) allocator: Arc<ExtentAllocator>,
    pub(crate) slab: DeviceSlab,
    pub(crate) ctx: Arc<CudaContext>,
}

impl GpuTier {
    /// Opens a GPU tier: loads the driver, allocates the device slab, the staging
    /// buffers and the streams.
    ///
    /// Errors: [`ErrorKind::Unavailable`](cascade_core::ErrorKind::Unavailable) when there is no CUDA driver, no GPU, or not
    /// enough free device memory; [`ErrorKind::Config`](cascade_core::ErrorKind::Config) for invalid settings.
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

    pub(crate) fn count(&self, counter: &AtomicU64, items: &[(usize, Side, Arc<Slot>)]) {
        let bytes: usize = items.iter().map(|(_, side, _)| side.len()).sum();
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Stores a block copied from device memory (a KV block an engine holds on a GPU).
    ///
    /// Errors as [`Tier::put`], and [`ErrorKind::InvalidInput`](cascade_core::ErrorKind::InvalidInput) when the range is not
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
    /// Errors as [`Tier::get`], and [`ErrorKind::InvalidInput`](cascade_core::ErrorKind::InvalidInput) when the range is not
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

    pub(crate) fn router(&self) -> Router {
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

    pub(crate) fn device_addr(&self, slot: &Slot) -> u64 {
        self.slab.ptr() + slot.extent.offset
    }

    pub(crate) fn reserve(&self, len: usize) -> Result<Arc<Slot>> {
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
}

/// The host buffers of a batch read as download destinations.
fn host_sides(items: &mut [(BlockId, &mut [u8])]) -> Vec<(BlockId, Side)> {
    items
        .iter_mut()
        .map(|(id, out)| (*id, Side::host(out.as_mut_ptr(), out.len())))
        .collect()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
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
        self.download(&host_sides(items))
    }

    /// Blocks bound for memory the DMA reaches directly (the registered shm pool, pinned
    /// buffers) are hashed on the device while they are copied out.
    fn get_batch_checked(
        &self,
        items: &mut [(BlockId, &mut [u8])],
    ) -> Vec<Result<(usize, Option<u64>)>> {
        let (results, checksums) = self.download_hashed(&host_sides(items));
        results
            .into_iter()
            .zip(checksums)
            .map(|(got, checksum)| got.map(|len| (len, checksum)))
            .collect()
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
