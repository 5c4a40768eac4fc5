//! Handles of work the store runs in the background: `PrefetchHandle` (blocks moving
//! into a faster tier) and `GetBatchHandle` (a batch read into the caller's buffers).
//!
//! Both can be polled (`done()`), waited on with the GIL released (`wait(timeout)`),
//! cancelled, and awaited from asyncio: `await handle` waits in the event loop's default
//! executor, so the loop keeps running while the store works.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use cascade::core::store::{GetBatchHandle, PrefetchHandle, PrefetchProgress, Prefetched};
use cascade::{BlockId, ErrorKind};

use crate::data::Batch;
use crate::errors::{invalid_input, kind_error, to_py};
use crate::split::raise_first;

/// `timeout` in seconds as a duration; `None` waits without a limit.
fn timeout_of(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|t| {
            Duration::try_from_secs_f64(t)
                .map_err(|_| invalid_input("timeout must be a non-negative number of seconds"))
        })
        .transpose()
}

/// `await handle`: the handle's `result()` run in the running loop's default executor.
fn awaitable<'py>(handle: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = handle.py();
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future =
        event_loop.call_method1("run_in_executor", (py.None(), handle.getattr("result")?))?;
    future.call_method0("__await__")
}

fn progress_dict<'py>(py: Python<'py>, p: PrefetchProgress) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("blocks", p.blocks)?;
    dict.set_item("ready", p.ready)?;
    dict.set_item("missing", p.missing)?;
    dict.set_item("failed", p.failed)?;
    dict.set_item("cancelled", p.cancelled)?;
    dict.set_item("pending", p.pending)?;
    Ok(dict)
}

/// A prefetch running in the background (`CascadeStore.prefetch`): blocks move into a
/// faster tier while the caller computes. `len(handle)` is the number of blocks asked
/// for (for `prefetch_prefix`, the stored leading keys); `ready` counts those in the
/// target tier so far. Dropping the handle (or `cancel()`) stops the prefetch between
/// chunks, unless `detach()` was called.
#[pyclass(name = "PrefetchHandle", module = "cascade", frozen)]
pub struct PyPrefetchHandle {
    handle: PrefetchHandle,
}

impl PyPrefetchHandle {
    pub fn new(handle: PrefetchHandle) -> Self {
        Self { handle }
    }
}

#[pymethods]
impl PyPrefetchHandle {
    fn __len__(&self) -> usize {
        self.handle.len()
    }

    /// Blocks in the target tier (or a faster one) so far.
    #[getter]
    fn ready(&self) -> usize {
        self.handle.ready()
    }

    /// Counts so far, as a dict: blocks, ready, missing, failed, cancelled, pending.
    fn progress<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        progress_dict(py, self.handle.progress())
    }

    /// Whether every block is settled.
    fn done(&self) -> bool {
        self.handle.is_done()
    }

    /// Waits (GIL released) until every block is settled, at most `timeout` seconds
    /// when given; returns whether they are.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_of(timeout)?;
        Ok(py.detach(|| match timeout {
            Some(t) => self.handle.wait_timeout(t),
            None => {
                self.handle.wait();
                true
            }
        }))
    }

    /// Waits like `wait` and returns `progress()`; raises `TimeoutError` when the
    /// blocks are not all settled within `timeout` seconds. Failed blocks do not raise
    /// (they stay readable where they were, or are gone when corrupt): see `errors()`.
    #[pyo3(signature = (timeout = None))]
    fn result<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        if !self.wait(py, timeout)? {
            return Err(pyo3::exceptions::PyTimeoutError::new_err(
                "the prefetch is still running",
            ));
        }
        self.progress(py)
    }

    /// Stops the prefetch before its next chunk; blocks already moved stay, the others
    /// stay where they were. Does not wait.
    fn cancel(&self) {
        self.handle.cancel();
    }

    /// Lets the prefetch run to its end even when this handle is dropped.
    fn detach(&self) {
        self.handle.detach();
    }

    /// Per block, in order: "pending", "moved", "resident" (already there), "missing",
    /// "cancelled" or "failed".
    fn statuses(&self) -> Vec<&'static str> {
        self.handle
            .outcomes()
            .iter()
            .map(|outcome| match outcome {
                None => "pending",
                Some(Ok(Prefetched::Moved { .. })) => "moved",
                Some(Ok(Prefetched::Resident { .. })) => "resident",
                Some(Ok(Prefetched::Missing)) => "missing",
                Some(Ok(Prefetched::Cancelled)) => "cancelled",
                Some(Err(_)) => "failed",
            })
            .collect()
    }

    /// The failed blocks so far: `(index, exception)` pairs, the exception of the
    /// error's kind (`TierFullError`, `CorruptError`, `IoError`, ...).
    fn errors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for (index, outcome) in self.handle.outcomes().into_iter().enumerate() {
            if let Some(Err(e)) = outcome {
                list.append((index, to_py(e.with_context("index", index)).into_value(py)))?;
            }
        }
        Ok(list)
    }

    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let p = self.handle.progress();
        format!(
            "<PrefetchHandle blocks={} ready={} missing={} failed={} cancelled={} pending={}>",
            p.blocks, p.ready, p.missing, p.failed, p.cancelled, p.pending
        )
    }
}

/// A host output buffer lent to the background read.
pub struct Lent {
    ptr: *mut u8,
    len: usize,
}

impl Lent {
    pub fn new(bytes: &mut [u8]) -> Self {
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
        }
    }
}

// SAFETY: the bytes belong to a Python buffer held (exported, so neither freed nor
// resized) by the `GetBatchHandle` that owns the read, which does not release it before
// the read is done; only the read thread writes them meanwhile.
unsafe impl Send for Lent {}

impl AsMut<[u8]> for Lent {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: see `Send` above: valid, exclusive to this read, `len` bytes long.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

type Results = Vec<cascade::Result<Option<usize>>>;

/// A batch read running in the background (`CascadeStore.get_batch_async`). `result()`
/// returns what `get_batch` returns (sizes, None for blocks not stored) and raises its
/// first failure; the outputs must not be touched until `done()` (or `await handle`).
/// Dropping the handle cancels the reads not started yet and waits for the others, so
/// the outputs are never written after it is gone.
#[pyclass(name = "GetBatchHandle", module = "cascade", frozen)]
pub struct PyGetBatchHandle {
    running: Option<GetBatchHandle<Lent>>,
    results: Mutex<Option<Results>>,
    /// The outputs, held until the read is done.
    batch: Mutex<Option<Batch>>,
}

impl PyGetBatchHandle {
    /// A read running on `running` into the buffers of `batch`.
    pub fn running(running: GetBatchHandle<Lent>, batch: Batch) -> Self {
        Self {
            running: Some(running),
            results: Mutex::new(None),
            batch: Mutex::new(Some(batch)),
        }
    }

    /// A read already done (outputs the background path does not take).
    pub fn finished(results: Results) -> Self {
        Self {
            running: None,
            results: Mutex::new(Some(results)),
            batch: Mutex::new(None),
        }
    }

    /// The results once the read is done (taken from the background read once).
    fn collected(&self) -> Option<Results> {
        let mut results = self
            .results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if results.is_none()
            && let Some(running) = &self.running
            && let Some(output) = running.try_wait()
        {
            *results = Some(output.results);
            // The read is over: the outputs may go back to Python.
            self.batch
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
        }
        results.clone()
    }
}

#[pymethods]
impl PyGetBatchHandle {
    /// Whether the read is done (or cancelled) and `result()` returns at once.
    fn done(&self) -> bool {
        self.running.as_ref().is_none_or(GetBatchHandle::is_done)
    }

    /// Waits (GIL released) until the read is done, at most `timeout` seconds when
    /// given; returns whether it is.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_of(timeout)?;
        let Some(running) = &self.running else {
            return Ok(true);
        };
        Ok(py.detach(|| running.wait_timeout(timeout.unwrap_or(Duration::MAX))))
    }

    /// Waits like `wait`, then returns one entry per block (its size, or None when it is
    /// not stored) or raises the first failure, `context["index"]` naming the block; a
    /// read cancelled before a block was reached raises `UnavailableError` for it.
    /// Raises `TimeoutError` when the read is not done within `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<Option<usize>>> {
        if !self.wait(py, timeout)? {
            return Err(pyo3::exceptions::PyTimeoutError::new_err(
                "the batch get is still running",
            ));
        }
        let results = self
            .collected()
            .ok_or_else(|| kind_error(ErrorKind::Io, "the batch get finished without results"))?;
        raise_first(results)
    }

    /// Stops the read before its next chunk of blocks; does not wait.
    fn cancel(&self) {
        if let Some(running) = &self.running {
            running.cancel();
        }
    }

    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(slf.as_any())
    }

    fn __repr__(&self) -> String {
        format!("<GetBatchHandle done={}>", self.done())
    }
}

impl Drop for PyGetBatchHandle {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.cancel();
            // The outputs are released below: nothing may write them after that.
            running.wait_timeout(Duration::MAX);
        }
    }
}

/// The host outputs of `parts`, when every block is one whole host buffer (the
/// background path); `None` otherwise.
pub fn lend_all(
    ids: &[BlockId],
    parts: Vec<crate::data::Part<&mut [u8]>>,
) -> Option<Vec<(BlockId, Lent)>> {
    ids.iter()
        .zip(parts)
        .map(|(id, part)| match part {
            crate::data::Part::Host(bytes) => Some((*id, Lent::new(bytes))),
            _ => None,
        })
        .collect()
}
