//! Batch put and get: one call for many blocks, spread over the store's I/O threads,
//! with a status per item.

use cascade::{BlockId, CascadeStore, ErrorKind, PutOutcome};

use crate::args;
use std::mem::MaybeUninit;

use crate::error::{CResult, Failure, guard};
use crate::ids::{CascadeBlockId, id_slice};
use crate::status::CascadeStatus;
use crate::store::{CascadeHandle, open_store};

/// Writes each item's status, records the first failure as the thread's last error and
/// returns it as the call's result.
pub(crate) fn settle(
    results: impl Iterator<Item = CResult>,
    statuses: Option<&mut [MaybeUninit<CascadeStatus>]>,
    succeeded: Option<&mut MaybeUninit<usize>>,
) -> CResult {
    let mut first_failure = None;
    let mut ok = 0usize;
    let mut statuses = statuses.map(|s| s.iter_mut());
    for result in results {
        let status = match result {
            Ok(()) => {
                ok += 1;
                CascadeStatus::Ok
            }
            Err(failure) => {
                let status = failure.status();
                first_failure.get_or_insert(failure);
                status
            }
        };
        if let Some(slot) = statuses.as_mut().and_then(|s| s.next()) {
            slot.write(status);
        }
    }
    if let Some(succeeded) = succeeded {
        succeeded.write(ok);
    }
    first_failure.map_or(Ok(()), Err)
}

/// Stores `count` blocks: block `i` is `lens[i]` bytes at `blocks[i]` under `ids[i]`.
/// Blocks are copied in parallel; when the fastest tier has room for the whole batch it
/// takes it through its batch path.
///
/// Per item: `out_statuses[i]` (when not NULL) is that block's status, as
/// `cascade_put` would return it; `*out_stored` (when not NULL) counts the items that
/// succeeded (stored or deduplicated). The call returns `CASCADE_STATUS_OK` when every
/// item succeeded, else the status of the first item that failed (its message is the
/// thread's last error). Argument errors (`INVALID_INPUT`: a NULL array with `count` > 0,
/// a NULL block with a non-zero length) are found before any block is stored, and then
/// the per-item outputs are left untouched.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `ids`, `blocks` and `lens` point to `count` readable
/// entries, each `blocks[i]` to `lens[i]` readable bytes that nothing writes during the
/// call; `out_statuses` is NULL or points to `count` writable statuses; `out_stored` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_put_batch(
    store: *const CascadeHandle,
    ids: *const CascadeBlockId,
    blocks: *const *const u8,
    lens: *const usize,
    count: usize,
    out_statuses: *mut CascadeStatus,
    out_stored: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, ids, blocks, lens, statuses, stored) = unsafe {
            (
                open_store(store)?,
                id_slice(ids, count)?,
                args::slice(blocks, count, "blocks")?,
                args::slice(lens, count, "lens")?,
                out_statuses_slice(out_statuses, count)?,
                args::out_opt(out_stored, "out_stored")?,
            )
        };
        let mut items: Vec<(BlockId, &[u8])> = Vec::with_capacity(count);
        for (i, ((id, &ptr), &len)) in ids.iter().zip(blocks).zip(lens).enumerate() {
            // SAFETY: the caller's contract for blocks[i], checked for NULL.
            let data = unsafe { args::slice(ptr, len, &format_args!("blocks[{i}]")) }?;
            items.push(((*id).into(), data));
        }
        let results = store.put_batch(&items);
        settle(
            results
                .into_iter()
                .map(|r| r.map(|_: PutOutcome| ()).map_err(Failure::from)),
            statuses,
            stored,
        )
    })
}

/// Reads `count` blocks: block `ids[i]` into `outs[i]`, which holds `capacities[i]`
/// bytes; `out_lens[i]` is set to its size (0 when it is not stored; the size needed when
/// the buffer is too small). Blocks are read in parallel, those of one tier in one batch.
///
/// Per item: `out_statuses[i]` (when not NULL) is that block's status as `cascade_get`
/// would return it (`CASCADE_STATUS_NOT_FOUND` for a miss); `*out_found` (when not NULL)
/// counts the blocks read. The call returns `CASCADE_STATUS_OK` when every block was
/// read, else the status of the first item that was not (a miss gives
/// `CASCADE_STATUS_NOT_FOUND`; look at the per-item statuses to tell misses from
/// errors). Argument errors (`INVALID_INPUT`: NULL arrays with `count` > 0, a NULL buffer
/// with a non-zero capacity, buffers that overlap) are found before anything is read, and
/// then the per-item outputs are left untouched.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `ids`, `outs` and `capacities` point to `count` readable
/// entries, each `outs[i]` to `capacities[i]` writable bytes that nothing else uses
/// during the call; `out_lens` points to `count` writable `size_t`; `out_statuses` is NULL
/// or points to `count` writable statuses; `out_found` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get_batch(
    store: *const CascadeHandle,
    ids: *const CascadeBlockId,
    outs: *const *mut u8,
    capacities: *const usize,
    out_lens: *mut usize,
    count: usize,
    out_statuses: *mut CascadeStatus,
    out_found: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, ids, outs, capacities, lens, statuses, found) = unsafe {
            (
                open_store(store)?,
                id_slice(ids, count)?,
                args::slice(outs, count, "outs")?,
                args::slice(capacities, count, "capacities")?,
                args::out_slice(out_lens, count, "out_lens")?,
                out_statuses_slice(out_statuses, count)?,
                args::out_opt(out_found, "out_found")?,
            )
        };
        check_disjoint(outs, capacities)?;
        let mut items: Vec<(BlockId, &mut [u8])> = Vec::with_capacity(count);
        for (i, ((id, &ptr), &capacity)) in ids.iter().zip(outs).zip(capacities).enumerate() {
            // SAFETY: the caller's contract for outs[i], checked for NULL; the buffers
            // were checked not to overlap, so the slices are disjoint.
            let out = unsafe { args::bytes_mut(ptr, capacity, &format_args!("outs[{i}]")) }?;
            items.push(((*id).into(), out));
        }
        let results = store.get_batch(&mut items);
        let read = items.iter().map(|(id, out)| (*id, out.len()));
        report_reads(store, results, read, lens, statuses, found)
    })
}

/// Writes the outcome of a batch read (`read` is each item's id and buffer capacity):
/// `lens[i]` the size (0 for a miss, the size needed for a buffer too small), the
/// statuses and the count found; returns the first failure.
pub(crate) fn report_reads(
    store: &CascadeStore,
    results: Vec<cascade::Result<Option<usize>>>,
    read: impl Iterator<Item = (BlockId, usize)>,
    lens: &mut [MaybeUninit<usize>],
    statuses: Option<&mut [MaybeUninit<CascadeStatus>]>,
    found: Option<&mut MaybeUninit<usize>>,
) -> CResult {
    let per_item = results.into_iter().zip(read).zip(lens.iter_mut()).map(
        |((result, (id, capacity)), len)| {
            len.write(0);
            match result {
                Ok(Some(n)) => {
                    len.write(n);
                    Ok(())
                }
                Ok(None) => Err(Failure::Missing(id)),
                Err(e) => {
                    if e.kind() == ErrorKind::InvalidInput {
                        if let Some(need) = store.len_of(id).filter(|&n| n > capacity as u64) {
                            len.write(usize::try_from(need).unwrap_or(usize::MAX));
                        }
                    }
                    Err(e.into())
                }
            }
        },
    );
    settle(per_item, statuses, found)
}

/// The optional per-item status array.
///
/// # Safety
/// `ptr` is NULL or points to `count` writable statuses.
pub(crate) unsafe fn out_statuses_slice<'a>(
    ptr: *mut CascadeStatus,
    count: usize,
) -> CResult<Option<&'a mut [MaybeUninit<CascadeStatus>]>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { args::out_slice(ptr, count, "out_statuses") }.map(Some)
}

/// Refuses output buffers that overlap: two reads into one memory would race.
pub(crate) fn check_disjoint(outs: &[*mut u8], capacities: &[usize]) -> CResult {
    let mut ranges: Vec<(usize, usize, usize)> = outs
        .iter()
        .zip(capacities)
        .enumerate()
        .filter(|(_, (_, cap))| **cap > 0)
        .map(|(i, (ptr, cap))| (*ptr as usize, (*ptr as usize).saturating_add(*cap), i))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        if start < end {
            return Err(Failure::invalid(format!(
                "outs[{a}] and outs[{b}] overlap: each block needs its own buffer"
            )));
        }
    }
    Ok(())
}
