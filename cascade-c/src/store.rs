//! The opaque store handle: open, close, and the single-block calls.
//!
//! Every call on a handle takes it by shared pointer: the store is internally
//! synchronised, so any number of threads may call into one handle at once. Only
//! `cascade_close` needs the caller to ensure no other call on that handle is running.

use std::ffi::c_char;
use std::mem::MaybeUninit;

use cascade::{BlockId, Cascade, CascadeStore, PutOutcome};

use crate::args;
use crate::config::CascadeConfigC;
use crate::error::{CResult, Failure, guard, guard_infallible};
use crate::ids::CascadeBlockId;
use crate::status::CascadeStatus;

/// An open store. Opaque: made by a `cascade_open_*` call, released by `cascade_close`.
pub struct CascadeHandle {
    // Shared with the asynchronous batch gets still running on it.
    store: std::sync::Arc<CascadeStore>,
}

impl CascadeHandle {
    /// A handle over a store opened in Rust (for Rust code that hands a store to C).
    pub fn from_store(store: CascadeStore) -> Self {
        Self {
            store: std::sync::Arc::new(store),
        }
    }

    /// Moves the handle to the heap and returns the pointer C code uses; release it
    /// with `cascade_close`.
    pub fn into_raw(self) -> *mut CascadeHandle {
        Box::into_raw(Box::new(self))
    }

    /// The store behind a handle.
    pub fn store(&self) -> &CascadeStore {
        &self.store
    }

    /// The store, shared (for work that outlives the call, such as asynchronous gets).
    pub fn shared(&self) -> &std::sync::Arc<CascadeStore> {
        &self.store
    }
}

/// The store behind a handle pointer.
///
/// # Safety
/// `handle` is NULL or a pointer returned by a `cascade_open_*` call and not yet closed.
pub unsafe fn open_store<'a>(handle: *const CascadeHandle) -> CResult<&'a CascadeStore> {
    // SAFETY: forwarded contract.
    unsafe { args::read(handle, "store") }.map(CascadeHandle::store)
}

fn publish(
    out: *mut *mut CascadeHandle,
    open: impl FnOnce() -> cascade::Result<CascadeStore>,
) -> CResult {
    // SAFETY: checked for NULL; the caller's contract says it is writable.
    let out = unsafe { args::out(out, "out")? };
    out.write(std::ptr::null_mut());
    let store = open()?;
    out.write(CascadeHandle::from_store(store).into_raw());
    Ok(())
}

/// Opens a store from the TOML file at `path` (the format of `cascade.toml`) and sets
/// `*out` to its handle. On failure `*out` is set to NULL.
///
/// Errors: `CASCADE_STATUS_CONFIG` for an unreadable or invalid file, the tier's own
/// error when a tier cannot open (`UNAVAILABLE`, `BUSY`, `IO`, ...),
/// `CASCADE_STATUS_INVALID_INPUT` for NULL arguments.
///
/// Thread safety: safe from any thread. Two stores in one machine must not use the same
/// shm pool or file-tier directory for writing (the second open reports `BUSY`).
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to a writable `cascade_store*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_open_toml_file(
    path: *const c_char,
    out: *mut *mut CascadeHandle,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let path = unsafe { args::text(path, "path")? };
        publish(out, || Cascade::open_toml_file(path))
    })
}

/// Opens a store from a TOML document held in `text` and sets `*out` to its handle.
/// On failure `*out` is set to NULL. Errors and thread safety as `cascade_open_toml_file`.
///
/// # Safety
/// `text` is a NUL-terminated string; `out` points to a writable `cascade_store*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_open_toml_str(
    text: *const c_char,
    out: *mut *mut CascadeHandle,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let text = unsafe { args::text(text, "text")? };
        publish(out, || Cascade::open_toml_str(text))
    })
}

/// Opens a store from the documented config struct (see `cascade_config`) and sets
/// `*out` to its handle. On failure `*out` is set to NULL. The config and its strings
/// are read only during the call. Errors and thread safety as `cascade_open_toml_file`.
///
/// # Safety
/// `config` points to a readable `cascade_config` whose string fields are NULL or
/// NUL-terminated; `out` points to a writable `cascade_store*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_open_config(
    config: *const CascadeConfigC,
    out: *mut *mut CascadeHandle,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let config = unsafe { args::read(config, "config")?.to_cascade()? };
        publish(out, || Cascade::open(&config))
    })
}

/// Opens the embedded default deployment (`cascade.toml`: 1 GiB of shm, a 4 GiB file tier
/// under `./cascade-data`; no root, GPU or server needed) and sets `*out` to its handle.
/// Errors and thread safety as `cascade_open_toml_file`.
///
/// # Safety
/// `out` points to a writable `cascade_store*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_open_default(out: *mut *mut CascadeHandle) -> CascadeStatus {
    guard(|| publish(out, Cascade::open_default))
}

/// Closes a store: waits for in-flight background work, releases its tiers (persistent
/// tiers keep their blocks for the next open) and frees the handle. NULL is a no-op.
///
/// Thread safety: no other call may be using `store`, and it must not be used after.
///
/// # Safety
/// `store` is NULL or a handle from a `cascade_open_*` call that is not closed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_close(store: *mut CascadeHandle) {
    if store.is_null() {
        return;
    }
    // SAFETY: the caller's contract: an open handle made by Box::into_raw, used by no one else.
    let handle = unsafe { Box::from_raw(store) };
    guard_infallible((), move || drop(handle));
}

/// Stores `len` bytes at `data` under `id`. With dedup on, an id already stored copies
/// nothing; `*out_deduplicated` (when not NULL) says which happened. With dedup off the
/// stored block is replaced. `data` may be NULL when `len` is 0.
///
/// Errors: `CASCADE_STATUS_TIER_FULL` when no tier could make room,
/// `CASCADE_STATUS_TOO_LARGE` when no tier can ever hold `len` bytes, `IO` and the like
/// from the tier, `INVALID_INPUT` for NULL arguments.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `data` points to `len` readable bytes that nothing writes
/// during the call; `out_deduplicated` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_put(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    data: *const u8,
    len: usize,
    out_deduplicated: *mut bool,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, data, dedup) = unsafe {
            (
                open_store(store)?,
                args::slice(data, len, "data")?,
                args::out_opt(out_deduplicated, "out_deduplicated")?,
            )
        };
        let outcome = store.put(id.into(), data)?;
        if let Some(dedup) = dedup {
            dedup.write(outcome == PutOutcome::Deduplicated);
        }
        Ok(())
    })
}

/// Copies the block `id` into `out` (`capacity` bytes) and sets `*out_len` to its size.
///
/// Errors: `CASCADE_STATUS_NOT_FOUND` when the block is not stored (`*out_len` = 0);
/// `CASCADE_STATUS_INVALID_INPUT` when `capacity` is smaller than the block (nothing is
/// copied; `*out_len` = the size needed) or for NULL arguments (`out` may be NULL when
/// `capacity` is 0, which makes the call a size query); `CASCADE_STATUS_CORRUPT` when the
/// stored bytes failed their checksum (never served; the block is dropped).
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `out` points to `capacity` writable bytes that nothing
/// else uses during the call; `out_len` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_get(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    out: *mut u8,
    capacity: usize,
    out_len: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, buf, len) = unsafe {
            (
                open_store(store)?,
                args::bytes_mut(out, capacity, "out")?,
                args::out(out_len, "out_len")?,
            )
        };
        get_into(store, id.into(), buf, len)
    })
}

/// One get with the size reporting of `cascade_get`.
pub fn get_into(
    store: &CascadeStore,
    id: BlockId,
    buf: &mut [u8],
    len: &mut MaybeUninit<usize>,
) -> CResult {
    len.write(0);
    match store.get(id, buf) {
        Ok(Some(n)) => {
            len.write(n);
            Ok(())
        }
        Ok(None) => Err(Failure::Missing(id)),
        Err(e) => {
            if let Some(need) = store.len_of(id).filter(|&n| n > buf.len() as u64) {
                len.write(usize::try_from(need).unwrap_or(usize::MAX));
            }
            Err(e.into())
        }
    }
}

/// Sets `*out_len` to the size of the stored block `id`.
///
/// Errors: `CASCADE_STATUS_NOT_FOUND` when it is not stored; `INVALID_INPUT` for NULL
/// arguments.
///
/// Thread safety: safe from any number of threads on one handle (another thread may
/// remove or replace the block right after).
///
/// # Safety
/// `store` is an open handle; `out_len` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_block_size(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    out_len: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, len) = unsafe { (open_store(store)?, args::out(out_len, "out_len")?) };
        let size = store.len_of(id.into()).ok_or(Failure::Missing(id.into()))?;
        len.write(usize::try_from(size).unwrap_or(usize::MAX));
        Ok(())
    })
}

/// Sets `*out` to whether `id` is stored.
///
/// Errors: `INVALID_INPUT` for NULL arguments.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_contains(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    out: *mut bool,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, out) = unsafe { (open_store(store)?, args::out(out, "out")?) };
        out.write(store.contains(id.into()));
        Ok(())
    })
}

/// Removes `id`; `*out_removed` (when not NULL) says whether it was stored. Removing an
/// absent id is not an error.
///
/// Errors: the tier's error when it could not drop the bytes; `INVALID_INPUT` for NULL
/// arguments.
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `out_removed` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_remove(
    store: *const CascadeHandle,
    id: CascadeBlockId,
    out_removed: *mut bool,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, removed) = unsafe {
            (
                open_store(store)?,
                args::out_opt(out_removed, "out_removed")?,
            )
        };
        let was = store.remove(id.into())?;
        if let Some(removed) = removed {
            removed.write(was);
        }
        Ok(())
    })
}

/// How many leading keys of a token-prefix chain (`cascade_prefix_keys`) are stored: the
/// number of blocks an engine can load instead of recomputing. Sets `*out_hits`.
///
/// Errors: `INVALID_INPUT` for NULL arguments (`keys` may be NULL when `count` is 0).
///
/// Thread safety: safe from any number of threads on one handle.
///
/// # Safety
/// `store` is an open handle; `keys` points to `count` readable ids; `out_hits` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_lookup_prefix(
    store: *const CascadeHandle,
    keys: *const CascadeBlockId,
    count: usize,
    out_hits: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (store, keys, hits) = unsafe {
            (
                open_store(store)?,
                crate::ids::id_slice(keys, count)?,
                args::out(out_hits, "out_hits")?,
            )
        };
        let keys: Vec<BlockId> = keys.iter().map(|k| BlockId::from(*k)).collect();
        hits.write(store.lookup_prefix(&keys));
        Ok(())
    })
}

/// Makes every tier durable (persistent tiers write back and fsync).
///
/// Errors: the tier's error (`IO`, ...); `INVALID_INPUT` for a NULL store.
///
/// Thread safety: safe from any number of threads on one handle; puts that return before
/// the flush starts are covered.
///
/// # Safety
/// `store` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_flush(store: *const CascadeHandle) -> CascadeStatus {
    // SAFETY: the caller's contract, checked for NULL.
    guard(|| Ok(unsafe { open_store(store)? }.flush()?))
}

/// Removes every block from every tier.
///
/// Errors: the tier's error; `INVALID_INPUT` for a NULL store.
///
/// Thread safety: safe from any number of threads on one handle; calls running at the
/// same time see the store either before or after the clear.
///
/// # Safety
/// `store` is an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_clear(store: *const CascadeHandle) -> CascadeStatus {
    // SAFETY: the caller's contract, checked for NULL.
    guard(|| Ok(unsafe { open_store(store)? }.clear()?))
}
