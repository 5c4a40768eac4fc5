//! The `extern "C"` functions behind an exported vtable: each turns raw arguments into a
//! call on the boxed tier, catches panics, and records the error text for `last_error`.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use cascade_core::plugin::abi::{
    ABI_VERSION, CAP_BATCH_NATIVE, CAP_DEVICE_MEMORY, CAP_PERSISTENT, CAP_REFRESH, CAP_SHARED,
    IdVisitor, Instance, RawBlockId, RawCapability, Status, Vtable,
};
use cascade_core::{BlockId, Error, ErrorKind, Result, Tier};

/// What [`export_tier!`](crate::export_tier) generates for a plugin: its name and how
/// to build a tier from the settings text.
pub trait Factory: 'static {
    /// The plugin's name, as the host reports it.
    const NAME: &'static CStr;

    /// Builds one instance from the TOML text of its settings.
    fn create(settings: &str) -> Result<Box<dyn Tier>>;
}

/// A [`Vtable`] that may live in a `static` (its `name` pointer refers to a `'static`
/// C string, which makes sharing it between threads sound).
#[repr(transparent)]
pub struct SyncVtable(Vtable);

// SAFETY: the only pointer in the table is `name`, which points to a `&'static CStr`;
// the function pointers are plain code addresses.
unsafe impl Sync for SyncVtable {}

impl SyncVtable {
    /// The vtable whose functions call into tiers made by `F`.
    pub const fn new<F: Factory>() -> Self {
        Self(Vtable {
            abi_version: ABI_VERSION,
            struct_size: std::mem::size_of::<Vtable>() as u32,
            name: F::NAME.as_ptr(),
            create: Some(create::<F>),
            destroy: Some(destroy),
            capability: Some(capability),
            capacity: Some(capacity),
            used: Some(used),
            put: Some(put),
            get: Some(get),
            len_of: Some(len_of),
            remove: Some(remove),
            flush: Some(flush),
            clear: Some(clear),
            list_ids: Some(list_ids),
            last_error: Some(last_error),
            put_batch: Some(put_batch),
            get_batch: Some(get_batch),
            refresh: Some(refresh),
        })
    }

    /// The address the entry symbol returns.
    pub const fn as_ptr(&'static self) -> *const Vtable {
        &self.0
    }
}

thread_local! {
    /// The calling thread's last error text, handed out by `last_error`.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn record(text: String) {
    // Interior NULs cannot cross as C text; they are replaced rather than truncating.
    let text = CString::new(text.replace('\0', "\u{FFFD}")).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; the text is then dropped.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(text));
}

fn fail(error: &Error) -> Status {
    record(error.to_string());
    Status::from_kind(error.kind())
}

fn record_panic(call: &str, payload: &(dyn std::any::Any + Send)) {
    let text = if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.as_str()
    } else {
        "a panic with a non-text payload"
    };
    record(format!("plugin panicked in {call}: {text}"));
}

/// Runs `body`, turning an error or a panic into a status and a recorded message.
fn guard(call: &str, body: impl FnOnce() -> Result<()>) -> Status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => Status::OK,
        Ok(Err(error)) => fail(&error),
        Err(payload) => {
            record_panic(call, &*payload);
            Status::PLUGIN
        }
    }
}

/// Runs a call that has no status to return (`capacity`, `used`): a panic answers
/// `fallback` and leaves the message for `last_error`.
fn guard_value(call: &str, fallback: u64, body: impl FnOnce() -> u64) -> u64 {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        record_panic(call, &*payload);
        fallback
    })
}

fn invalid(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("NULL {what} passed to the plugin"),
    )
}

/// # Safety
/// `instance` must be NULL or a pointer returned by `create` and not yet destroyed.
unsafe fn tier<'a>(instance: Instance) -> Result<&'a dyn Tier> {
    if instance.is_null() {
        return Err(invalid("instance"));
    }
    // SAFETY: per the ABI, a non-null instance is the `Box<Box<dyn Tier>>` made by
    // `create`, alive until `destroy`.
    Ok(unsafe { &**instance.cast::<Box<dyn Tier>>() })
}

/// # Safety
/// `id` must be NULL or point to 16 readable bytes.
unsafe fn block_id(id: *const RawBlockId) -> Result<BlockId> {
    if id.is_null() {
        return Err(invalid("block id"));
    }
    // SAFETY: non-null and readable per the caller.
    Ok(BlockId::from_bytes(unsafe { (*id).bytes }))
}

/// # Safety
/// Unless `len` is 0, `ptr` must be NULL or point to `len` bytes readable for `'a`.
unsafe fn host_bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if len == 0 {
        Ok(&[])
    } else if ptr.is_null() {
        Err(invalid(what))
    } else {
        // SAFETY: non-null and readable for `len` bytes per the caller.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// # Safety
/// `out` must be NULL or writable.
unsafe fn write<T>(out: *mut T, value: T) -> Result<()> {
    if out.is_null() {
        return Err(invalid("output pointer"));
    }
    // SAFETY: non-null and writable per the caller.
    unsafe { out.write(value) };
    Ok(())
}

unsafe extern "C" fn create<F: Factory>(
    config: *const u8,
    config_len: usize,
    out: *mut Instance,
) -> Status {
    guard("create", || {
        // SAFETY: the host passes `config_len` readable bytes.
        let bytes = unsafe { host_bytes(config, config_len, "config") }?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::config(format!("plugin settings are not UTF-8: {e}")))?;
        let tier = F::create(text)?;
        let instance: Instance = Box::into_raw(Box::new(tier)).cast::<c_void>();
        // SAFETY: `out` comes from the host; on a NULL `out` the instance is reclaimed.
        if let Err(e) = unsafe { write(out, instance) } {
            // SAFETY: `instance` was made just above and never shared.
            drop(unsafe { Box::from_raw(instance.cast::<Box<dyn Tier>>()) });
            return Err(e);
        }
        Ok(())
    })
}

unsafe extern "C" fn destroy(instance: Instance) {
    if instance.is_null() {
        return;
    }
    // The tier's Drop may panic; the panic stays here.
    let _ = guard("destroy", || {
        // SAFETY: the host calls destroy once, with an instance made by `create`.
        drop(unsafe { Box::from_raw(instance.cast::<Box<dyn Tier>>()) });
        Ok(())
    });
}

unsafe extern "C" fn capability(instance: Instance, out: *mut RawCapability) -> Status {
    guard("capability", || {
        // SAFETY: ABI contract on `instance`.
        let capability = unsafe { tier(instance) }?.capability();
        let mut flags = 0;
        if capability.persistent {
            flags |= CAP_PERSISTENT;
        }
        if capability.device_memory {
            flags |= CAP_DEVICE_MEMORY;
        }
        if capability.shared {
            flags |= CAP_SHARED;
        }
        if capability.refresh {
            flags |= CAP_REFRESH;
        }
        if capability.batch_native {
            flags |= CAP_BATCH_NATIVE;
        }
        let raw = RawCapability {
            max_block_size: capability.max_block_size,
            flags,
            reserved: 0,
        };
        // SAFETY: `out` is a host out-pointer.
        unsafe { write(out, raw) }
    })
}

unsafe extern "C" fn capacity(instance: Instance) -> u64 {
    guard_value("capacity", 0, || {
        // SAFETY: ABI contract on `instance`.
        unsafe { tier(instance) }.map_or(0, |t| t.capacity())
    })
}

unsafe extern "C" fn used(instance: Instance) -> u64 {
    guard_value("used", 0, || {
        // SAFETY: ABI contract on `instance`.
        unsafe { tier(instance) }.map_or(0, |t| t.used())
    })
}

unsafe extern "C" fn put(
    instance: Instance,
    id: *const RawBlockId,
    data: *const u8,
    len: usize,
) -> Status {
    guard("put", || {
        // SAFETY: ABI contract on `instance` and `id`.
        let (tier, id) = unsafe { (tier(instance)?, block_id(id)?) };
        // SAFETY: the host passes `len` readable bytes for the call.
        let data = unsafe { host_bytes(data, len, "data") }?;
        tier.put(id, data)
    })
}

unsafe extern "C" fn get(
    instance: Instance,
    id: *const RawBlockId,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> Status {
    guard("get", || {
        // SAFETY: ABI contract on `instance` and `id`.
        let (tier, id) = unsafe { (tier(instance)?, block_id(id)?) };
        let buffer: &mut [u8] = if out_cap == 0 {
            &mut []
        } else if out.is_null() {
            return Err(invalid("output buffer"));
        } else {
            // SAFETY: the host passes `out_cap` writable bytes for the call.
            unsafe { std::slice::from_raw_parts_mut(out, out_cap) }
        };
        match tier.get(id, buffer) {
            // SAFETY: `out_len` is a host out-pointer.
            Ok(n) => unsafe { write(out_len, n) },
            Err(e) => {
                if e.kind() == ErrorKind::InvalidInput
                    && let Some(need) = tier.len_of(id)
                {
                    // The ABI promises the needed length alongside a short-buffer error.
                    // SAFETY: as above.
                    let _ = unsafe { write(out_len, usize::try_from(need).unwrap_or(usize::MAX)) };
                }
                Err(e)
            }
        }
    })
}

unsafe extern "C" fn len_of(
    instance: Instance,
    id: *const RawBlockId,
    out_len: *mut u64,
) -> Status {
    guard("len_of", || {
        // SAFETY: ABI contract on `instance` and `id`.
        let (tier, id) = unsafe { (tier(instance)?, block_id(id)?) };
        let len = tier.len_of(id).ok_or_else(|| Error::not_found(id))?;
        // SAFETY: `out_len` is a host out-pointer.
        unsafe { write(out_len, len) }
    })
}

unsafe extern "C" fn remove(instance: Instance, id: *const RawBlockId, removed: *mut u8) -> Status {
    guard("remove", || {
        // SAFETY: ABI contract on `instance` and `id`.
        let (tier, id) = unsafe { (tier(instance)?, block_id(id)?) };
        let was_present = tier.remove(id)?;
        // SAFETY: `removed` is a host out-pointer.
        unsafe { write(removed, u8::from(was_present)) }
    })
}

unsafe extern "C" fn flush(instance: Instance) -> Status {
    // SAFETY: ABI contract on `instance`.
    guard("flush", || unsafe { tier(instance) }?.flush())
}

unsafe extern "C" fn clear(instance: Instance) -> Status {
    // SAFETY: ABI contract on `instance`.
    guard("clear", || unsafe { tier(instance) }?.clear())
}

unsafe extern "C" fn list_ids(instance: Instance, visit: IdVisitor, ctx: *mut c_void) -> Status {
    guard("list_ids", || {
        // SAFETY: ABI contract on `instance`.
        let tier = unsafe { tier(instance) }?;
        for (id, len) in tier.ids() {
            let raw = RawBlockId {
                bytes: *id.as_bytes(),
            };
            // SAFETY: the host's visitor takes its own `ctx` and an id valid for the call.
            unsafe { visit(ctx, &raw, len) };
        }
        Ok(())
    })
}

/// # Safety
/// Unless `count` is 0, `ptr` must be NULL or point to `count` readable values.
unsafe fn host_array<'a, T>(ptr: *const T, count: usize, what: &str) -> Result<&'a [T]> {
    if count == 0 {
        Ok(&[])
    } else if ptr.is_null() {
        Err(invalid(what))
    } else {
        // SAFETY: non-null and readable for `count` values per the caller.
        Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
    }
}

/// # Safety
/// Unless `count` is 0, `ptr` must be NULL or point to `count` writable values.
unsafe fn host_array_mut<'a, T>(ptr: *mut T, count: usize, what: &str) -> Result<&'a mut [T]> {
    if count == 0 {
        Ok(&mut [])
    } else if ptr.is_null() {
        Err(invalid(what))
    } else {
        // SAFETY: non-null and writable for `count` values per the caller.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, count) })
    }
}

fn item_status<T>(result: &Result<T>) -> Status {
    match result {
        Ok(_) => Status::OK,
        Err(e) => Status::from_kind(e.kind()),
    }
}

unsafe extern "C" fn put_batch(
    instance: Instance,
    ids: *const RawBlockId,
    data: *const *const u8,
    lens: *const usize,
    count: usize,
    statuses: *mut Status,
) -> Status {
    guard("put_batch", || {
        // SAFETY: ABI contract on `instance`; the host passes `count` entries in each array.
        let (tier, ids, data, lens, statuses) = unsafe {
            (
                tier(instance)?,
                host_array(ids, count, "ids")?,
                host_array(data, count, "data")?,
                host_array(lens, count, "lens")?,
                host_array_mut(statuses, count, "statuses")?,
            )
        };
        let mut items: Vec<(BlockId, &[u8])> = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: the host passes `lens[i]` readable bytes at `data[i]` for the call.
            let bytes = unsafe { host_bytes(data[i], lens[i], "data") }?;
            items.push((BlockId::from_bytes(ids[i].bytes), bytes));
        }
        for (slot, result) in statuses.iter_mut().zip(tier.put_batch(&items)) {
            *slot = item_status(&result);
        }
        Ok(())
    })
}

unsafe extern "C" fn get_batch(
    instance: Instance,
    ids: *const RawBlockId,
    outs: *const *mut u8,
    caps: *const usize,
    count: usize,
    out_lens: *mut usize,
    statuses: *mut Status,
) -> Status {
    guard("get_batch", || {
        // SAFETY: ABI contract on `instance`; the host passes `count` entries in each array.
        let (tier, ids, outs, caps, out_lens, statuses) = unsafe {
            (
                tier(instance)?,
                host_array(ids, count, "ids")?,
                host_array(outs, count, "outs")?,
                host_array(caps, count, "caps")?,
                host_array_mut(out_lens, count, "out_lens")?,
                host_array_mut(statuses, count, "statuses")?,
            )
        };
        let mut items: Vec<(BlockId, &mut [u8])> = Vec::with_capacity(count);
        for i in 0..count {
            let buffer: &mut [u8] = if caps[i] == 0 {
                &mut []
            } else if outs[i].is_null() {
                return Err(invalid("output buffer"));
            } else {
                // SAFETY: the host passes `caps[i]` writable bytes at `outs[i]`, each
                // buffer apart from the others, for the call.
                unsafe { std::slice::from_raw_parts_mut(outs[i], caps[i]) }
            };
            items.push((BlockId::from_bytes(ids[i].bytes), buffer));
        }
        let results = tier.get_batch(&mut items);
        for ((slot, len), result) in statuses.iter_mut().zip(out_lens.iter_mut()).zip(results) {
            *slot = item_status(&result);
            *len = result.unwrap_or(0);
        }
        Ok(())
    })
}

unsafe extern "C" fn refresh(
    instance: Instance,
    added: IdVisitor,
    removed: IdVisitor,
    ctx: *mut c_void,
) -> Status {
    guard("refresh", || {
        // SAFETY: ABI contract on `instance`.
        let found = unsafe { tier(instance) }?.refresh()?;
        for (id, len) in found.added {
            let raw = RawBlockId {
                bytes: *id.as_bytes(),
            };
            // SAFETY: the host's visitor takes its own `ctx` and an id valid for the call.
            unsafe { added(ctx, &raw, len) };
        }
        for id in found.removed {
            let raw = RawBlockId {
                bytes: *id.as_bytes(),
            };
            // SAFETY: as above.
            unsafe { removed(ctx, &raw, 0) };
        }
        Ok(())
    })
}

unsafe extern "C" fn last_error(_instance: Instance) -> *const c_char {
    // The pointer stays valid until this thread records the next error, which happens
    // only inside a later call into the plugin, as the ABI allows.
    LAST_ERROR
        .try_with(|slot| {
            slot.borrow()
                .as_ref()
                .map_or(std::ptr::null(), |text| text.as_ptr())
        })
        .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bytes_refuses_null_unless_empty() {
        // SAFETY: NULL with a length is what the helper must refuse without reading.
        let err = unsafe { host_bytes(std::ptr::null(), 4, "data") }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("NULL data"), "{err}");
        // SAFETY: a zero length reads nothing, whatever the pointer.
        let empty = unsafe { host_bytes(std::ptr::null(), 0, "data") }.unwrap();
        assert!(empty.is_empty());
        let buf = [1u8, 2, 3];
        // SAFETY: `buf` holds 3 readable bytes.
        let read = unsafe { host_bytes(buf.as_ptr(), 3, "data") }.unwrap();
        assert_eq!(read, &buf);
    }
}
