//! Asynchronous batch gets: [`CascadeStore::get_batch_async`] hands a batch to a
//! background thread and returns a handle at once, so an engine overlaps the load with
//! its own compute and collects the blocks later (wait, poll, or `.await`).
//!
//! The batch runs through [`CascadeStore::get_batch`] itself, so its results are the
//! ones a synchronous call returns. It is read in chunks: cancelling stops it before the
//! next chunk, and the blocks not read by then fail with a cancelled error. The threads
//! are process-wide, started by the first asynchronous get: up to
//! [`ASYNC_GET_THREADS`] batches run at once, later ones wait in order.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::CascadeStore;
use crate::{BlockId, Error, ErrorKind, Result};

/// Batches that run at once over the whole process; later ones wait in order.
pub const ASYNC_GET_THREADS: usize = 4;

/// Blocks read per chunk: cancellation takes effect between chunks.
const CHUNK_BLOCKS: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

/// The process-wide threads of asynchronous gets.
struct Workers {
    queue: Mutex<VecDeque<Job>>,
    queued: Condvar,
    started: Mutex<usize>,
}

impl Workers {
    fn get() -> &'static Workers {
        static WORKERS: OnceLock<Workers> = OnceLock::new();
        WORKERS.get_or_init(|| Workers {
            queue: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            started: Mutex::new(0),
        })
    }

    /// Queues `job`; runs it here when no thread could be started at all.
    fn submit(&'static self, job: Job) {
        let have = {
            let mut started = self.started.lock();
            while *started < ASYNC_GET_THREADS {
                let spawned = std::thread::Builder::new()
                    .name(format!("cascade-async-get-{started}"))
                    .spawn(move || self.work());
                match spawned {
                    Ok(_) => *started += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start an asynchronous-get thread");
                        break;
                    }
                }
            }
            *started
        };
        if have == 0 {
            job();
            return;
        }
        self.queue.lock().push_back(job);
        self.queued.notify_one();
    }

    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock();
                loop {
                    if let Some(job) = queue.pop_front() {
                        break job;
                    }
                    self.queued.wait(&mut queue);
                }
            };
            job();
        }
    }
}

/// What an asynchronous batch get hands back: the buffers, filled, and one result per
/// block as [`CascadeStore::get_batch`] returns them.
#[derive(Debug)]
pub struct GetBatchOutput<B> {
    /// The ids and buffers passed in, in order.
    pub items: Vec<(BlockId, B)>,
    /// Per block: its length, `None` when not stored, or the error (a cancelled read
    /// fails with [`ErrorKind::Unavailable`] and the context `cancelled = true`).
    pub results: Vec<Result<Option<usize>>>,
}

impl<B> GetBatchOutput<B> {
    fn empty() -> Self {
        Self {
            items: Vec::new(),
            results: Vec::new(),
        }
    }
}

struct Shared<B> {
    cancelled: AtomicBool,
    state: Mutex<State<B>>,
    finished: Condvar,
}

struct State<B> {
    output: Option<GetBatchOutput<B>>,
    done: bool,
    waker: Option<Waker>,
}

impl<B> Shared<B> {
    fn complete(&self, output: GetBatchOutput<B>) {
        let waker = {
            let mut state = self.state.lock();
            state.output = Some(output);
            state.done = true;
            state.waker.take()
        };
        self.finished.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A batch get running in the background: poll it, wait for it (with or without a
/// timeout), cancel it, or `.await` it (it is a [`Future`] woken from the thread that
/// reads; no runtime is needed). Dropping it cancels the reads not started yet.
#[must_use = "dropping the handle cancels the batch get"]
pub struct GetBatchHandle<B> {
    shared: Arc<Shared<B>>,
}

impl<B> GetBatchHandle<B> {
    /// Whether the batch is read (or cancelled) and its output ready.
    pub fn is_done(&self) -> bool {
        self.shared.state.lock().done
    }

    /// The output if the batch is done (taken: later calls return `None`).
    pub fn try_wait(&self) -> Option<GetBatchOutput<B>> {
        self.shared.state.lock().output.take()
    }

    /// Waits for the batch and returns its output (empty if a poll of the future took
    /// it already).
    pub fn wait(self) -> GetBatchOutput<B> {
        {
            let mut state = self.shared.state.lock();
            while !state.done {
                self.shared.finished.wait(&mut state);
            }
        }
        self.try_wait().unwrap_or_else(GetBatchOutput::empty)
    }

    /// Waits at most `timeout`; returns whether the batch is done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        // A timeout past what the clock can add (Duration::MAX) waits without a limit.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.state.lock();
        while !state.done {
            match deadline {
                Some(deadline) => {
                    if self
                        .shared
                        .finished
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        return state.done;
                    }
                }
                None => self.shared.finished.wait(&mut state),
            }
        }
        true
    }

    /// Stops the batch before its next chunk; blocks not read by then fail with a
    /// cancelled error (their buffers are returned untouched). Does not wait.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::Release);
    }
}

impl<B> Drop for GetBatchHandle<B> {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl<B> Future for GetBatchHandle<B> {
    type Output = GetBatchOutput<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.shared.state.lock();
        if state.done {
            return Poll::Ready(state.output.take().unwrap_or_else(GetBatchOutput::empty));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<B> std::fmt::Debug for GetBatchHandle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetBatchHandle")
            .field("done", &self.is_done())
            .finish()
    }
}

fn cancelled_read(id: BlockId) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the batch get was cancelled before this block was read",
    )
    .with_context("id", id)
    .with_context("cancelled", true)
}

/// Reads `items` chunk by chunk through the store's batch get until cancelled.
fn read_all<B: AsMut<[u8]>>(
    store: &CascadeStore,
    items: &mut [(BlockId, B)],
    cancelled: &AtomicBool,
) -> Vec<Result<Option<usize>>> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks_mut(CHUNK_BLOCKS) {
        if cancelled.load(Ordering::Acquire) {
            results.extend(chunk.iter().map(|(id, _)| Err(cancelled_read(*id))));
            continue;
        }
        let mut batch: Vec<(BlockId, &mut [u8])> = chunk
            .iter_mut()
            .map(|(id, buffer)| (*id, buffer.as_mut()))
            .collect();
        results.extend(store.get_batch(&mut batch));
    }
    results
}

impl CascadeStore {
    /// Starts [`CascadeStore::get_batch`] of `items` (ids and the buffers to fill) on a
    /// background thread and returns a handle at once; the buffers come back in the
    /// handle's [`GetBatchOutput`], with the results a synchronous call returns. A
    /// block a prefetch is moving is read once the move is done.
    pub fn get_batch_async<B>(self: &Arc<Self>, items: Vec<(BlockId, B)>) -> GetBatchHandle<B>
    where
        B: AsMut<[u8]> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            cancelled: AtomicBool::new(false),
            state: Mutex::new(State {
                output: None,
                done: false,
                waker: None,
            }),
            finished: Condvar::new(),
        });
        let store = Arc::clone(self);
        let job_shared = Arc::clone(&shared);
        Workers::get().submit(Box::new(move || {
            let mut items = items;
            let read = catch_unwind(AssertUnwindSafe(|| {
                read_all(&store, &mut items, &job_shared.cancelled)
            }));
            let results = read.unwrap_or_else(|_| {
                items
                    .iter()
                    .map(|_| Err(Error::new(ErrorKind::Io, "the batch get panicked")))
                    .collect()
            });
            // The store may be dropped here, on this thread, when the caller let go of it.
            drop(store);
            job_shared.complete(GetBatchOutput { items, results });
        }));
        GetBatchHandle { shared }
    }
}
