//! The CUDA context as a store-level resource: one [`DeviceContext`] per device and
//! process, shared by the GPU tier and by the copies that bring device memory into host
//! tiers ([`HostCopier`], handed to the store through [`device_access`]).
//!
//! A host copier registers the host tiers' memory (the shm pool) with the driver once,
//! so device memory reaches it by DMA directly, batched with `cuMemcpyBatchAsync` over
//! the context's streams; host memory the driver does not know as pinned goes through
//! pinned (not write-combined) staging buffers.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cascade_core::Result;
use cascade_core::device::{DeviceAccess, DeviceCopier, HostDeviceCopy};
use cascade_core::tier::HostRegion;
use cudarc::driver::CudaContext;
use parking_lot::Mutex;

use crate::checksum::finish_checksums;
use crate::copy::{CopyEngine, DmaCopy, Flight};
use crate::driver::open_context;
use crate::gathered::{move_runs, split_runs};
use crate::memory::{HostKind, HostRegistration, PinnedBuffer, query_host};

/// Streams of a device context's copy engine.
const STREAMS: usize = 4;
/// Copies per `cuMemcpyBatchAsync` call.
const GROUP: usize = 64;
/// Bytes of one pinned staging buffer.
const STAGING: usize = 8 << 20;

/// One device's CUDA context, copy engine and pinned staging buffers.
pub struct DeviceContext {
    device: usize,
    ctx: Arc<CudaContext>,
    engine: CopyEngine,
    staging: Mutex<Vec<PinnedBuffer>>,
}

static CONTEXTS: OnceLock<Mutex<Vec<Arc<DeviceContext>>>> = OnceLock::new();

impl DeviceContext {
    /// The context of `device`, created on first use.
    ///
    /// Errors: [`ErrorKind::Unavailable`](cascade_core::ErrorKind::Unavailable) without a
    /// driver or GPU; [`ErrorKind::Config`](cascade_core::ErrorKind::Config) for a device
    /// the machine lacks.
    pub fn get(device: usize) -> Result<Arc<Self>> {
        let mut contexts = CONTEXTS.get_or_init(|| Mutex::new(Vec::new())).lock();
        if let Some(found) = contexts.iter().find(|c| c.device == device) {
            return Ok(Arc::clone(found));
        }
        let ctx = open_context(device)?;
        let engine = CopyEngine::new(&ctx, STREAMS, GROUP)?;
        let context = Arc::new(Self {
            device,
            ctx,
            engine,
            staging: Mutex::new(Vec::new()),
        });
        contexts.push(Arc::clone(&context));
        Ok(context)
    }

    /// The device's retained primary context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The device ordinal.
    pub fn device(&self) -> usize {
        self.device
    }

    fn take_staging(&self) -> Result<PinnedBuffer> {
        match self.staging.lock().pop() {
            Some(buffer) => Ok(buffer),
            None => PinnedBuffer::new(&self.ctx, STAGING),
        }
    }

    fn give_back(&self, buffer: PinnedBuffer) {
        self.staging.lock().push(buffer);
    }
}

/// cascade-gpu's [`DeviceAccess`] for a store: the facade passes it with the `gpu`
/// feature.
pub fn device_access() -> Arc<dyn DeviceAccess> {
    Arc::new(GpuAccess)
}

struct GpuAccess;

impl DeviceAccess for GpuAccess {
    fn copier(&self, device: usize, regions: &[HostRegion]) -> Result<Arc<dyn DeviceCopier>> {
        let context = DeviceContext::get(device)?;
        Ok(Arc::new(HostCopier::new(context, regions)?))
    }
}

/// Copies between one device and host memory, with the host tiers' memory registered.
pub struct HostCopier {
    context: Arc<DeviceContext>,
    /// Ranges DMA reaches directly: registered here, or already registered elsewhere
    /// (the GPU tier registers the pool below it).
    direct: Vec<(usize, usize)>,
    // Dropped after every copy that used them has landed (each call waits for its own).
    _registrations: Vec<HostRegistration>,
}

impl HostCopier {
    /// A copier on `context` with `regions` registered, whole pages only.
    pub fn new(context: Arc<DeviceContext>, regions: &[HostRegion]) -> Result<Self> {
        let page = page_size();
        let mut direct = Vec::new();
        let mut registrations = Vec::new();
        for region in regions {
            let start = (region.base as usize).next_multiple_of(page);
            let end = (region.base as usize + region.len) / page * page;
            if end <= start {
                continue;
            }
            // SAFETY: the region belongs to a tier of the store that owns this copier;
            // the store drops its copiers before its tiers, so it stays mapped for as
            // long as the registration lives.
            match unsafe { HostRegistration::register(&context.ctx, start as *mut u8, end - start) }
            {
                Ok(Some(registration)) => {
                    tracing::info!(
                        bytes = end - start,
                        device = context.device,
                        "registered a host tier's memory with CUDA for device copies"
                    );
                    registrations.push(registration);
                    direct.push((start, end - start));
                }
                Ok(None) => direct.push((start, end - start)),
                Err(e) => tracing::warn!(error = %e,
                    "could not register a host tier's memory; device copies to it are staged"),
            }
        }
        Ok(Self {
            context,
            direct,
            _registrations: registrations,
        })
    }

    fn is_direct(&self, known: &mut Vec<(usize, usize)>, host: usize, len: usize) -> bool {
        let inside = |&(start, size): &(usize, usize)| host >= start && host + len <= start + size;
        if self.direct.iter().any(inside) || known.iter().any(inside) {
            return true;
        }
        match query_host(host, len) {
            (HostKind::Pinned, range) => {
                known.extend(range);
                true
            }
            (HostKind::Pageable, _) => false,
        }
    }

    /// Runs `copies` in direction `to_host`: the direct ones as batched DMA on the
    /// engine's streams (runs of small pieces through a device scratch buffer,
    /// `gathered.rs`), the others through staging buffers. On the way to the host, each
    /// of `hash` (host ranges) that one direct copy or one gathered run fills is hashed
    /// on the device; one answer per range (`None` for the others).
    fn run(
        &self,
        copies: &[HostDeviceCopy],
        to_host: bool,
        hash: &[(usize, usize)],
    ) -> Result<Vec<Option<u64>>> {
        let engine = &self.context.engine;
        engine.bind()?;
        let mut known = Vec::new();
        let mut direct = Vec::with_capacity(copies.len());
        let mut staged = Vec::new();
        for c in copies.iter().filter(|c| c.len > 0) {
            if self.is_direct(&mut known, c.host, c.len) {
                direct.push(*c);
            } else {
                staged.push(*c);
            }
        }
        let (singles, runs) = match engine.piece_kernel() {
            Some(_) => split_runs(direct),
            None => (direct, Vec::new()),
        };
        let mut answers = vec![None; hash.len()];
        // A range one copy fills whole is hashed from the copy's device source while
        // the copies run.
        let whole = whole_copies(&singles, hash);
        let pending = match engine.checksum_kernel() {
            Some(kernel) if to_host && !whole.is_empty() => {
                let blocks: Vec<(u64, usize)> = whole.iter().map(|&(_, b)| b).collect();
                // SAFETY: the caller keeps every device range valid and unchanged until
                // this returns; the pending checksums are finished, or dropped (which
                // waits for the kernel), before then.
                unsafe { kernel.start(&blocks) }
                    .inspect_err(|e| tracing::warn!(error = %e, "checksum kernel launch failed; the host tier hashes these blocks"))
                    .ok()
            }
            _ => None,
        };
        let dma: Vec<DmaCopy> = singles
            .iter()
            .map(|c| DmaCopy::toward(to_host, c.host as u64, c.device, c.len))
            .collect();
        let mut flight: Flight<'_, ()> = Flight::new(engine);
        // Spread over the streams in slices of a few groups each.
        let per_stream = dma.len().div_ceil(STREAMS).max(GROUP);
        for slice in dma.chunks(per_stream) {
            flight.push(slice, ())?;
        }
        let gathered = move_runs(engine, &runs, to_host, hash);
        let landed = flight.land(|()| {});
        for (&(k, _), checksum) in whole.iter().zip(finish_checksums(pending, whole.len())) {
            answers[k] = checksum;
        }
        for (k, checksum) in gathered? {
            answers[k] = checksum;
        }
        landed?;
        self.run_staged(&staged, to_host)?;
        Ok(answers)
    }

    /// Pageable host memory: each staging buffer's worth of copies goes device ->
    /// staging -> host (or host -> staging -> device), one batched DMA per buffer.
    fn run_staged(&self, copies: &[HostDeviceCopy], to_host: bool) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        let engine = &self.context.engine;
        let buffer = self.context.take_staging()?;
        let base = buffer.ptr();
        let mut pieces: Vec<(HostDeviceCopy, usize)> = Vec::new();
        let mut filled = 0usize;
        let mut outcome = Ok(());
        let flush = |pieces: &mut Vec<(HostDeviceCopy, usize)>| -> Result<()> {
            if pieces.is_empty() {
                return Ok(());
            }
            if !to_host {
                for (c, at) in pieces.iter() {
                    // SAFETY: the host range is the caller's, readable for c.len; the
                    // staging buffer has room at `at` (filled <= STAGING) and no DMA
                    // uses it (the previous flight landed).
                    unsafe {
                        std::ptr::copy_nonoverlapping(c.host as *const u8, base.add(*at), c.len)
                    };
                }
            }
            let dma: Vec<DmaCopy> = pieces
                .iter()
                .map(|(c, at)| {
                    let staging = base as u64 + *at as u64;
                    DmaCopy::toward(to_host, staging, c.device, c.len)
                })
                .collect();
            let mut flight: Flight<'_, ()> = Flight::new(engine);
            flight.push(&dma, ())?;
            flight.land(|()| {})?;
            if to_host {
                for (c, at) in pieces.iter() {
                    // SAFETY: the DMA into the staging buffer has landed; the host range
                    // is the caller's, writable for c.len and touched by nothing else.
                    unsafe {
                        std::ptr::copy_nonoverlapping(base.add(*at), c.host as *mut u8, c.len)
                    };
                }
            }
            pieces.clear();
            Ok(())
        };
        'copies: for c in copies {
            let mut done = 0usize;
            while done < c.len {
                if filled == STAGING {
                    if let Err(e) = flush(&mut pieces) {
                        outcome = Err(e);
                        break 'copies;
                    }
                    filled = 0;
                }
                let n = (c.len - done).min(STAGING - filled);
                let piece = HostDeviceCopy {
                    host: c.host + done,
                    device: c.device + done as u64,
                    len: n,
                };
                pieces.push((piece, filled));
                filled += n;
                done += n;
            }
        }
        if outcome.is_ok() {
            outcome = flush(&mut pieces);
        }
        self.context.give_back(buffer);
        outcome
    }
}

impl DeviceCopier for HostCopier {
    fn device(&self) -> usize {
        self.context.device
    }

    unsafe fn to_host(&self, copies: &[HostDeviceCopy]) -> Result<()> {
        self.run(copies, true, &[]).map(|_| ())
    }

    unsafe fn to_device(&self, copies: &[HostDeviceCopy]) -> Result<()> {
        self.run(copies, false, &[]).map(|_| ())
    }

    /// Each block is hashed by the checksum kernel while the copies run: from its
    /// device source where one copy fills it, from the scratch buffer where it was
    /// gathered from small pieces; a kernel that did not load or launch leaves it to
    /// the host (`None`).
    unsafe fn to_host_hashed(
        &self,
        copies: &[HostDeviceCopy],
        blocks: &[(usize, usize)],
    ) -> Result<Vec<Option<u64>>> {
        self.run(copies, true, blocks)
    }
}

/// `(position in hash, (device address, length))` of each range of `hash` that one of
/// `copies` fills whole.
fn whole_copies(copies: &[HostDeviceCopy], hash: &[(usize, usize)]) -> Vec<(usize, (u64, usize))> {
    if hash.is_empty() {
        return Vec::new();
    }
    let by_host: HashMap<usize, &HostDeviceCopy> = copies.iter().map(|c| (c.host, c)).collect();
    hash.iter()
        .enumerate()
        .filter_map(|(k, &(host, len))| {
            by_host
                .get(&host)
                .filter(|c| c.len == len)
                .map(|c| (k, (c.device, len)))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ranges_one_copy_fills_whole_are_hashed_from_the_source() {
        let copy = |host, device, len| HostDeviceCopy { host, device, len };
        let copies = [copy(0, 900, 100), copy(100, 500, 50), copy(4096, 7, 4096)];
        // Filled whole by a copy; longer than its copy; starting where no copy starts.
        let hash = [(4096, 4096), (0, 150), (50, 50), (100, 50)];
        assert_eq!(
            whole_copies(&copies, &hash),
            vec![(0, (7, 4096)), (3, (500, 50))]
        );
        assert!(whole_copies(&copies, &[]).is_empty());
    }
}
