//! Prefetch: blocks moved into a faster tier in the background, behind an opaque
//! `cascade_prefetch` handle the caller polls, waits on, cancels and frees.

use std::time::Duration;

use cascade::BlockId;
use cascade::core::store::{PrefetchHandle, PrefetchTarget};

use crate::args;
use crate::error::{CResult, Failure, guard, guard_infallible};
use crate::ids::{CascadeBlockId, id_slice};
use crate::status::CascadeStatus;
use crate::store::{CascadeHandle, open_store};

/// `tier` value of `cascade_prefetch`: the fastest tier that takes each block and where
/// room can be made.
pub const CASCADE_PREFETCH_FASTEST: i32 = -1;

/// A prefetch running in the background. Opaque: made by `cascade_prefetch` or
/// `cascade_prefetch_prefix`, released by `cascade_prefetch_free`.
pub struct CascadePrefetch {
    handle: PrefetchHandle,
}

/// Counts of a prefetch's blocks so far.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CascadePrefetchProgress {
    /// Blocks asked for (for a prefix prefetch, the stored leading keys).
    pub blocks: usize,
    /// Blocks in the target tier or a faster one (moved, or already there).
    pub ready: usize,
    /// Blocks not stored.
    pub missing: usize,
    /// Blocks that could not move (no room, a corrupt or unreadable block); they stay
    /// readable where they were, except a corrupt one, which is dropped.
    pub failed: usize,
    /// Blocks left where they were because the prefetch was cancelled.
    pub cancelled: usize,
    /// Blocks not settled yet.
    pub pending: usize,
}

/// The store's prefetch counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CascadePrefetchStats {
    /// Blocks a prefetch moved into a faster tier.
    pub prefetched: u64,
    /// Gets served by a prefetched block from the tier it was moved to (first read).
    pub prefetch_hits: u64,
    /// Prefetched blocks that left that tier before any get read them.
    pub prefetch_wasted: u64,
}

fn target(tier: i32) -> CResult<PrefetchTarget> {
    match tier {
        CASCADE_PREFETCH_FASTEST => Ok(PrefetchTarget::Fastest),
        t => usize::try_from(t).map(PrefetchTarget::Tier).map_err(|_| {
            Failure::invalid(
                "tier must be a tier position (0 is the fastest) or CASCADE_PREFETCH_FASTEST",
            )
        }),
    }
}

/// # Safety
/// As `cascade_prefetch`.
unsafe fn start(
    store: *const CascadeHandle,
    ids: *const CascadeBlockId,
    count: usize,
    tier: i32,
    out: *mut *mut CascadePrefetch,
    prefix: bool,
) -> CResult {
    // SAFETY: the caller's contract, checked for NULL.
    let out = unsafe { args::out(out, "out")? };
    out.write(std::ptr::null_mut());
    // SAFETY: the caller's contract, checked for NULL.
    let (store, ids) = unsafe { (open_store(store)?, id_slice(ids, count)?) };
    let ids: Vec<BlockId> = ids.iter().map(|id| BlockId::from(*id)).collect();
    let target = target(tier)?;
    let handle = if prefix {
        store.prefetch_prefix_to(&ids, target)?
    } else {
        store.prefetch_to(&ids, target)?
    };
    out.write(Box::into_raw(Box::new(CascadePrefetch { handle })));
    Ok(())
}

/// Starts moving `count` blocks into tier `tier` (a position, 0 the fastest, or
/// `CASCADE_PREFETCH_FASTEST`) in the background and sets `*out` to a handle at once.
/// A get of a block being moved waits for it instead of reading it twice; ids not stored
/// are counted missing. At most `max_prefetches` (config, default 2) prefetches move
/// blocks at a time; later ones wait in order. On failure `*out` is set to NULL.
///
/// Errors: `INVALID_INPUT` for NULL arguments (`ids` may be NULL when `count` is 0) or a
/// tier that does not exist; `IO` when the prefetch threads cannot start.
///
/// Thread safety: safe from any number of threads on one store handle.
///
/// # Safety
/// `store` is an open handle; `ids` points to `count` readable ids; `out` points to a
/// writable `cascade_prefetch_handle*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch(
    store: *const CascadeHandle,
    ids: *const CascadeBlockId,
    count: usize,
    tier: i32,
    out: *mut *mut CascadePrefetch,
) -> CascadeStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { start(store, ids, count, tier, out, false) })
}

/// `cascade_prefetch` of the leading stored keys of a token-prefix chain
/// (`cascade_prefix_keys`): the blocks an engine can load, as many as
/// `cascade_lookup_prefix` counts (`blocks` in the handle's progress).
///
/// # Safety
/// As `cascade_prefetch`, with `keys` for `ids`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch_prefix(
    store: *const CascadeHandle,
    keys: *const CascadeBlockId,
    count: usize,
    tier: i32,
    out: *mut *mut CascadePrefetch,
) -> CascadeStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { start(store, keys, count, tier, out, true) })
}

/// # Safety
/// `prefetch` is NULL or a handle not yet freed.
unsafe fn handle<'a>(prefetch: *const CascadePrefetch) -> CResult<&'a PrefetchHandle> {
    // SAFETY: forwarded contract.
    unsafe { args::read(prefetch, "prefetch") }.map(|p| &p.handle)
}

/// Sets `*out_progress` to the counts of the prefetch's blocks so far.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `prefetch` is a handle not yet freed; `out_progress` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch_progress(
    prefetch: *const CascadePrefetch,
    out_progress: *mut CascadePrefetchProgress,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (handle, out) =
            unsafe { (handle(prefetch)?, args::out(out_progress, "out_progress")?) };
        let p = handle.progress();
        out.write(CascadePrefetchProgress {
            blocks: p.blocks,
            ready: p.ready,
            missing: p.missing,
            failed: p.failed,
            cancelled: p.cancelled,
            pending: p.pending,
        });
        Ok(())
    })
}

/// Waits until every block of the prefetch is settled, at most `timeout_ms`
/// milliseconds (a negative value waits without a limit), and sets `*out_done` (when not
/// NULL) to whether they are.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `prefetch` is a handle not yet freed; `out_done` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch_wait(
    prefetch: *const CascadePrefetch,
    timeout_ms: i64,
    out_done: *mut bool,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (handle, done) = unsafe { (handle(prefetch)?, args::out_opt(out_done, "out_done")?) };
        let finished = match u64::try_from(timeout_ms) {
            Ok(ms) => handle.wait_timeout(Duration::from_millis(ms)),
            Err(_) => handle.wait_timeout(Duration::MAX),
        };
        if let Some(done) = done {
            done.write(finished);
        }
        Ok(())
    })
}

/// Stops the prefetch before its next chunk: blocks already moved stay in the faster
/// tier, the others stay where they were (a block is moved whole or not at all). Does
/// not wait.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `prefetch` is a handle not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch_cancel(
    prefetch: *const CascadePrefetch,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        unsafe { handle(prefetch)? }.cancel();
        Ok(())
    })
}

/// Lets the prefetch run to its end when its handle is freed (by default freeing
/// cancels it).
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `prefetch` is a handle not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch_detach(
    prefetch: *const CascadePrefetch,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        unsafe { handle(prefetch)? }.detach();
        Ok(())
    })
}

/// Releases a prefetch handle, cancelling the prefetch unless it was detached. NULL is
/// accepted and does nothing. The handle may outlive its store (`cascade_close` settles
/// every prefetch as cancelled).
///
/// Thread safety: no other call on this handle may run during or after it.
///
/// # Safety
/// `prefetch` is NULL or a handle not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefetch_free(prefetch: *mut CascadePrefetch) {
    guard_infallible((), || {
        if !prefetch.is_null() {
            // SAFETY: made by Box::into_raw in `start`, not yet freed (the contract).
            drop(unsafe { Box::from_raw(prefetch) });
        }
    });
}

/// Sets `*out` to the store's prefetch counters.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_prefetch_stats(
    store: *const CascadeHandle,
    out: *mut CascadePrefetchStats,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, out) = unsafe { (open_store(store)?, args::out(out, "out")?) };
        let stats = store.stats();
        out.write(CascadePrefetchStats {
            prefetched: stats.prefetched,
            prefetch_hits: stats.prefetch_hits,
            prefetch_wasted: stats.prefetch_wasted,
        });
        Ok(())
    })
}
