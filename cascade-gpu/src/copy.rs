//! The copy engine: several CUDA streams, batched copies, and events for completion.
//!
//! One `cuMemcpyAsync` per 128 KiB block costs enough CPU time to issue that a single
//! thread cannot keep the link busy; `cuMemcpyBatchAsync` issues a group of copies in
//! one call and reaches the link's rate (`gpu_bench` measures it against the ceiling). Groups rotate over the streams, one event is
//! recorded after each group, and the caller waits on those events, never on a whole
//! stream or the device.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cascade_core::Result;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, sys};
use parking_lot::Mutex;

use crate::checksum::ChecksumKernel;
pub use crate::dma::DmaCopy;
use crate::driver::{check, cuda_error, has_batch_copy};
use crate::kernel::CopyKernel;
use crate::pieces::PieceKernel;

/// Streams, a pool of events, and the batched-copy entry point.
pub struct CopyEngine {
    ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    next_stream: AtomicUsize,
    events: Mutex<Vec<CudaEvent>>,
    batch_copy: bool,
    kernel: Option<CopyKernel>,
    checksums: Option<ChecksumKernel>,
    pieces: Option<PieceKernel>,
    group: usize,
}

impl CopyEngine {
    /// `streams` non-blocking streams; copies handed to the driver `group` at a time.
    pub fn new(ctx: &Arc<CudaContext>, streams: usize, group: usize) -> Result<Self> {
        let streams = (0..streams)
            .map(|_| {
                ctx.new_stream()
                    .map_err(|e| crate::driver::unavailable("cuStreamCreate", e))
            })
            .collect::<Result<Vec<_>>>()?;
        let kernel = CopyKernel::load(ctx)
            .inspect_err(|e| tracing::warn!(error = %e, "device copy kernel not loaded; device-to-device copies use the driver's copies"))
            .ok();
        let checksums = ChecksumKernel::load(ctx)
            .inspect_err(|e| tracing::warn!(error = %e, "checksum kernel not loaded; host tiers hash blocks copied from the GPU themselves"))
            .ok();
        let pieces = PieceKernel::load(ctx)
            .inspect_err(|e| tracing::warn!(error = %e, "piece-copy kernel not loaded; blocks in small pieces are copied piece by piece"))
            .ok();
        Ok(Self {
            ctx: Arc::clone(ctx),
            streams,
            next_stream: AtomicUsize::new(0),
            events: Mutex::new(Vec::new()),
            batch_copy: has_batch_copy(),
            kernel,
            checksums,
            pieces,
            group: group.max(1),
        })
    }

    /// Whether copies go through `cuMemcpyBatchAsync` (driver 12.8 or newer).
    pub fn uses_batch_copy(&self) -> bool {
        self.batch_copy
    }

    /// Whether device-to-device copies run in the tier's own kernel.
    pub fn uses_copy_kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// The kernel that hashes device blocks, where it loaded.
    pub fn checksum_kernel(&self) -> Option<&ChecksumKernel> {
        self.checksums.as_ref()
    }

    /// The kernel that gathers and scatters small pieces, where it loaded.
    pub fn piece_kernel(&self) -> Option<&PieceKernel> {
        self.pieces.as_ref()
    }

    /// Stream `stream` (an index as [`CopyEngine::pick_stream`] gives).
    pub fn stream(&self, stream: usize) -> &Arc<CudaStream> {
        &self.streams[stream]
    }

    /// Copies per driver call.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Makes the tier's context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_error("cuCtxSetCurrent", e))
    }

    /// The next stream in rotation.
    pub fn pick_stream(&self) -> usize {
        self.next_stream.fetch_add(1, Ordering::Relaxed) % self.streams.len()
    }

    /// Enqueues `copies` on stream `stream` without waiting.
    pub fn enqueue(&self, stream: usize, copies: &[DmaCopy]) -> Result<()> {
        let cu_stream = self.streams[stream].cu_stream();
        for group in copies.chunks(self.group) {
            if self.batch_copy && group.len() > 1 {
                self.enqueue_batch(cu_stream, group)?;
            } else {
                for c in group.iter().filter(|c| c.len > 0) {
                    // SAFETY: both addresses are unified addresses of memory that the
                    // caller keeps valid until the event recorded after this completes.
                    let status = unsafe { sys::cuMemcpyAsync(c.dst, c.src, c.len, cu_stream) };
                    check("cuMemcpyAsync", status)?;
                }
            }
        }
        Ok(())
    }

    /// Enqueues device-to-device `copies` on `stream`: one kernel launch per group where
    /// the kernel loaded, the driver's copies otherwise.
    pub fn enqueue_device(&self, stream: usize, copies: &[DmaCopy]) -> Result<()> {
        match &self.kernel {
            // SAFETY: the callers pass device ranges that stay valid until the event
            // recorded after this completes (see Flight).
            Some(kernel) => unsafe { kernel.launch(self.streams[stream].cu_stream(), copies) },
            None => self.enqueue(stream, copies),
        }
    }

    fn enqueue_batch(&self, cu_stream: sys::CUstream, group: &[DmaCopy]) -> Result<()> {
        let mut dsts: Vec<sys::CUdeviceptr> = Vec::with_capacity(group.len());
        let mut srcs: Vec<sys::CUdeviceptr> = Vec::with_capacity(group.len());
        let mut sizes: Vec<usize> = Vec::with_capacity(group.len());
        for c in group.iter().filter(|c| c.len > 0) {
            dsts.push(c.dst);
            srcs.push(c.src);
            sizes.push(c.len);
        }
        if sizes.is_empty() {
            return Ok(());
        }
        // SAFETY: all-zero is a valid CUmemcpyAttributes (INVALID locations, no flags).
        let mut attrs: sys::CUmemcpyAttributes = unsafe { std::mem::zeroed() };
        // Every source is device, pinned or registered memory that stays valid until the
        // group's event completes, so the driver may read it in stream order.
        attrs.srcAccessOrder = sys::CUmemcpySrcAccessOrder::CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
        let mut attr_index: usize = 0;
        let mut fail_index: usize = usize::MAX;
        // SAFETY: three arrays of `sizes.len()` entries, one attribute applying from copy
        // 0 on, a non-null stream of this context; the memory stays valid as above.
        let status = unsafe {
            sys::cuMemcpyBatchAsync(
                dsts.as_mut_ptr(),
                srcs.as_mut_ptr(),
                sizes.as_mut_ptr(),
                sizes.len(),
                &mut attrs,
                &mut attr_index,
                1,
                &mut fail_index,
                cu_stream,
            )
        };
        check("cuMemcpyBatchAsync", status).map_err(|e| {
            let e = e.with_context("copies", sizes.len());
            match (fail_index < sizes.len()).then_some(fail_index) {
                Some(i) => e
                    .with_context("failed_copy", i)
                    .with_context("dst", format!("{:#x}", dsts[i]))
                    .with_context("src", format!("{:#x}", srcs[i]))
                    .with_context("bytes", sizes[i]),
                None => e,
            }
        })
    }

    /// Records an event on `stream` after everything enqueued there so far.
    pub fn record(&self, stream: usize) -> Result<PooledEvent<'_>> {
        let event = match self.events.lock().pop() {
            Some(event) => event,
            None => self
                .ctx
                .new_event(None)
                .map_err(|e| cuda_error("cuEventCreate", e))?,
        };
        let pooled = PooledEvent {
            engine: self,
            event: Some(event),
        };
        pooled
            .event()
            .record(&self.streams[stream])
            .map_err(|e| cuda_error("cuEventRecord", e))?;
        Ok(pooled)
    }

    /// Records `event` on `stream` (for events owned elsewhere, like a staging buffer's).
    pub fn record_into(&self, event: &CudaEvent, stream: usize) -> Result<()> {
        event
            .record(&self.streams[stream])
            .map_err(|e| cuda_error("cuEventRecord", e))
    }

    /// Waits for every stream to drain. Used after a failure, when the copies already
    /// enqueued must finish before their memory is handed back.
    pub fn drain_all(&self) {
        for stream in &self.streams {
            if let Err(e) = stream.synchronize() {
                tracing::warn!(error = %e, "cuStreamSynchronize failed while draining");
            }
        }
    }
}

/// An event borrowed from the engine's pool; goes back on drop.
pub struct PooledEvent<'e> {
    engine: &'e CopyEngine,
    event: Option<CudaEvent>,
}

impl PooledEvent<'_> {
    fn event(&self) -> &CudaEvent {
        self.event
            .as_ref()
            .unwrap_or_else(|| unreachable!("event used after drop"))
    }

    /// Blocks until the work recorded before this event is done.
    pub fn wait(&self) -> Result<()> {
        self.event()
            .synchronize()
            .map_err(|e| cuda_error("cuEventSynchronize", e))
    }
}

impl Drop for PooledEvent<'_> {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.engine.events.lock().push(event);
        }
    }
}

/// Groups of copies in flight, each with an event and a payload handed back, in order,
/// once its copies have landed. If a flight is dropped before landing (an error on the
/// way), it drains the streams so that no copy outlives the memory it touches.
pub struct Flight<'e, T> {
    engine: &'e CopyEngine,
    groups: Vec<(PooledEvent<'e>, T)>,
    landed: bool,
}

impl<'e, T> Flight<'e, T> {
    /// An empty flight.
    pub fn new(engine: &'e CopyEngine) -> Self {
        Self {
            engine,
            groups: Vec::new(),
            landed: false,
        }
    }

    /// Enqueues `copies` on the next stream and remembers `payload` for landing.
    pub fn push(&mut self, copies: &[DmaCopy], payload: T) -> Result<()> {
        let stream = self.engine.pick_stream();
        self.push_on(stream, copies, payload)
    }

    /// Enqueues device-to-device `copies` on the next stream (see
    /// [`CopyEngine::enqueue_device`]) and remembers `payload` for landing.
    pub fn push_device(&mut self, copies: &[DmaCopy], payload: T) -> Result<()> {
        let stream = self.engine.pick_stream();
        let enqueued = self.engine.enqueue_device(stream, copies);
        self.settle(stream, enqueued, payload)
    }

    /// Enqueues `copies` on `stream` and remembers `payload` for landing.
    pub fn push_on(&mut self, stream: usize, copies: &[DmaCopy], payload: T) -> Result<()> {
        let enqueued = self.engine.enqueue(stream, copies);
        self.settle(stream, enqueued, payload)
    }

    fn settle(&mut self, stream: usize, enqueued: Result<()>, payload: T) -> Result<()> {
        match enqueued.and_then(|()| self.engine.record(stream)) {
            Ok(event) => {
                self.groups.push((event, payload));
                Ok(())
            }
            Err(e) => {
                // Part of the group may be in flight: let it land before the payload
                // (which may own the memory it touches) is dropped.
                self.engine.drain_all();
                drop(payload);
                Err(e)
            }
        }
    }

    /// Waits for each group in order and hands its payload to `done`.
    pub fn land(mut self, mut done: impl FnMut(T)) -> Result<()> {
        let groups = std::mem::take(&mut self.groups);
        let mut failure = None;
        let mut leftovers = Vec::new();
        for (event, payload) in groups {
            match event.wait() {
                Ok(()) if failure.is_none() => done(payload),
                Ok(()) => leftovers.push(payload),
                Err(e) => {
                    failure.get_or_insert(e);
                    leftovers.push(payload);
                }
            }
        }
        if failure.is_some() {
            self.engine.drain_all();
        }
        self.landed = true;
        drop(leftovers);
        failure.map_or(Ok(()), Err)
    }
}

impl<T> Drop for Flight<'_, T> {
    fn drop(&mut self) {
        if !self.landed {
            self.engine.drain_all();
        }
    }
}
