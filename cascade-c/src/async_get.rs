//! Asynchronous batch gets: `cascade_get_batch_async` starts a batch read on a
//! background thread and returns an opaque handle at once, so the caller computes while
//! the blocks load; `cascade_get_batch_async_wait` collects what `cascade_get_batch`
//! would have reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade::core::store::GetBatchHandle;
use cascade::{BlockId, CascadeStore};

use crate::args;
use crate::batch::{check_disjoint, out_statuses_slice, report_reads};
use crate::error::{CResult, guard, guard_infallible};
use crate::ids::{CascadeBlockId, id_slice};
use crate::status::CascadeStatus;
use crate::store::CascadeHandle;

/// A caller's output buffer, lent to the background read.
struct Lent {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the caller keeps the buffer valid and unused until the handle reports the read
// done or is freed (the contract of `cascade_get_batch_async`), and freeing waits for
// the read; only the reading thread writes it meanwhile.
unsafe impl Send for Lent {}

impl AsMut<[u8]> for Lent {
    fn as_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: see `Send`: valid for `len` bytes and exclusive to this read.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

type Results = Vec<cascade::Result<Option<usize>>>;

/// A batch get running in the background. Opaque: made by `cascade_get_batch_async`,
/// released by `cascade_get_batch_async_free`.
pub struct CascadeGetBatchAsync {
    store: Arc<CascadeStore>,
    running: GetBatchHandle<Lent>,
    /// Each item's id and buffer capacity.
    items: Vec<(BlockId, usize)>,
    results: Mutex<Option<Results>>,
}

/// Starts reading `count` blocks in the background, as `cascade_get_batch` reads them
/// (block `ids[i]` into `outs[i]`, which holds `capacities[i]` bytes), and sets `*out` to
/// a handle at once. The buffers must stay valid, and must not be read or written, until
/// `cascade_get_batch_async_wait` reports the read done or the handle is freed. A block
/// a prefetch is moving is read once the move is done. On failure `*out` is NULL and
/// nothing is read.
///
/// Errors: `INVALID_INPUT` for NULL arrays with `count` > 0, a NULL buffer with a
/// non-zero capacity, or buffers that overlap.
///
/// Thread safety: safe from any number of threads on one store handle. Free every
/// asynchronous-get handle before `cascade_close` of its store: a read still running
/// keeps the store open until it ends.
///
/// # Safety
/// `store` is an open handle; `ids`, `outs` and `capacities` point to `count` readable
/// entries, each `outs[i]` to `capacities[i]` writable bytes kept as said above; `out`
/// points to a writable `cascade_get_batch_async_handle*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_batch_async(
    store: *const CascadeHandle,
    ids: *const CascadeBlockId,
    outs: *const *mut u8,
    capacities: *const usize,
    count: usize,
    out: *mut *mut CascadeGetBatchAsync,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let out = unsafe { args::out(out, "out")? };
        out.write(std::ptr::null_mut());
        // SAFETY: the caller's contract, checked for NULL.
        let (store, ids, outs, capacities) = unsafe {
            (
                args::read(store, "store")?.shared(),
                id_slice(ids, count)?,
                args::slice(outs, count, "outs")?,
                args::slice(capacities, count, "capacities")?,
            )
        };
        check_disjoint(outs, capacities)?;
        let mut lent = Vec::with_capacity(count);
        let mut items = Vec::with_capacity(count);
        for (i, ((id, &ptr), &capacity)) in ids.iter().zip(outs).zip(capacities).enumerate() {
            // SAFETY: checks outs[i] for NULL with a non-zero capacity (the caller's
            // contract covers the rest); the slice itself is not kept.
            unsafe { args::bytes_mut(ptr, capacity, &format_args!("outs[{i}]")) }?;
            let id = BlockId::from(*id);
            lent.push((id, Lent { ptr, len: capacity }));
            items.push((id, capacity));
        }
        let running = store.get_batch_async(lent);
        out.write(Box::into_raw(Box::new(CascadeGetBatchAsync {
            store: Arc::clone(store),
            running,
            items,
            results: Mutex::new(None),
        })));
        Ok(())
    })
}

/// # Safety
/// `handle` is NULL or a handle not yet freed.
unsafe fn running<'a>(handle: *const CascadeGetBatchAsync) -> CResult<&'a CascadeGetBatchAsync> {
    // SAFETY: forwarded contract.
    unsafe { args::read(handle, "handle") }
}

/// Waits at most `timeout_ms` milliseconds (a negative value waits without a limit) for
/// the read and sets `*out_done` to whether it is done. Once it is, the outputs are
/// written as `cascade_get_batch` writes them (`out_lens[i]`, `out_statuses[i]` when not
/// NULL, `*out_found` when not NULL) and the call returns what `cascade_get_batch`
/// returns (a block not reached before `cascade_get_batch_async_cancel` is
/// `CASCADE_STATUS_UNAVAILABLE`); while it is not, they are left alone and the call
/// returns `CASCADE_STATUS_OK`. It may be called again after the read is done.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `handle` is a handle not yet freed; `out_lens` points to `count` writable `size_t`
/// (the batch's count); `out_statuses` is NULL or points to `count` writable statuses;
/// `out_found` is NULL or writable; `out_done` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_batch_async_wait(
    handle: *const CascadeGetBatchAsync,
    timeout_ms: i64,
    out_lens: *mut usize,
    out_statuses: *mut CascadeStatus,
    out_found: *mut usize,
    out_done: *mut bool,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (handle, done) = unsafe { (running(handle)?, args::out(out_done, "out_done")?) };
        let count = handle.items.len();
        // SAFETY: the caller's contract, checked for NULL.
        let (lens, statuses, found) = unsafe {
            (
                args::out_slice(out_lens, count, "out_lens")?,
                out_statuses_slice(out_statuses, count)?,
                args::out_opt(out_found, "out_found")?,
            )
        };
        let timeout = u64::try_from(timeout_ms).map_or(Duration::MAX, Duration::from_millis);
        done.write(false);
        if !handle.running.wait_timeout(timeout) {
            return Ok(());
        }
        let results = {
            let mut kept = handle
                .results
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if kept.is_none() {
                *kept = handle.running.try_wait().map(|output| output.results);
            }
            kept.clone().unwrap_or_default()
        };
        done.write(true);
        report_reads(
            &handle.store,
            results,
            handle.items.iter().copied(),
            lens,
            statuses,
            found,
        )
    })
}

/// Stops the read before its next chunk of blocks; does not wait. The blocks not read
/// then report `CASCADE_STATUS_UNAVAILABLE`.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `handle` is a handle not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_batch_async_cancel(
    handle: *const CascadeGetBatchAsync,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        unsafe { running(handle)? }.running.cancel();
        Ok(())
    })
}

/// Releases the handle: cancels the reads not started and waits for the others, so the
/// buffers are no longer written once it returns. NULL is accepted and does nothing.
///
/// Thread safety: no other call on this handle may run during or after it.
///
/// # Safety
/// `handle` is NULL or a handle not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_batch_async_free(handle: *mut CascadeGetBatchAsync) {
    guard_infallible((), || {
        if handle.is_null() {
            return;
        }
        // SAFETY: made by Box::into_raw in `cascade_get_batch_async`, not yet freed.
        let handle = unsafe { Box::from_raw(handle) };
        handle.running.cancel();
        handle.running.wait_timeout(Duration::MAX);
    });
}
