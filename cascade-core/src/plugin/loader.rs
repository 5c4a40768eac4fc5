//! Loads a plugin library and wraps each instance it creates as a [`Tier`].

use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use rayon::prelude::*;

use super::abi::{
    ABI_VERSION, CAP_BATCH_NATIVE, CAP_DEVICE_MEMORY, CAP_PERSISTENT, CAP_REFRESH, CAP_SHARED,
    ENTRY_SYMBOL, ENTRY_SYMBOL_NUL, EntryFn, GetBatchFn, IdVisitor, Instance, MIN_VTABLE_SIZE,
    PutBatchFn, RawBlockId, RawCapability, RefreshFn, Status, Vtable,
};
use crate::tier::{Capability, Tier, TierRefresh};
use crate::{BlockId, Error, ErrorKind, Result};

/// The kind string of plugin tiers.
pub const KIND: &str = "plugin";

type CreateFn = unsafe extern "C" fn(*const u8, usize, *mut Instance) -> Status;
type DestroyFn = unsafe extern "C" fn(Instance);
type CapabilityFn = unsafe extern "C" fn(Instance, *mut RawCapability) -> Status;
type SizeFn = unsafe extern "C" fn(Instance) -> u64;
type PutFn = unsafe extern "C" fn(Instance, *const RawBlockId, *const u8, usize) -> Status;
type GetFn =
    unsafe extern "C" fn(Instance, *const RawBlockId, *mut u8, usize, *mut usize) -> Status;
type LenOfFn = unsafe extern "C" fn(Instance, *const RawBlockId, *mut u64) -> Status;
type RemoveFn = unsafe extern "C" fn(Instance, *const RawBlockId, *mut u8) -> Status;
type ActionFn = unsafe extern "C" fn(Instance) -> Status;
type ListFn = unsafe extern "C" fn(Instance, IdVisitor, *mut c_void) -> Status;
type LastErrorFn = unsafe extern "C" fn(Instance) -> *const c_char;

/// Opens a shared library that is never unmapped again, even after the last handle is
/// closed (`RTLD_NODELETE`): a plugin may run threads of its own (a connection pool's
/// reaper, a thread pool) that finish a moment after its last instance is destroyed,
/// and unmapping the code under them would crash the process.
///
/// # Safety
/// Loading runs the library's initialisers; see [`PluginLibrary::load`].
unsafe fn open_library(path: &Path) -> std::result::Result<libloading::Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: forwarded from the caller.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL | libc::RTLD_NODELETE) }
            .map(Into::into)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: forwarded from the caller.
        unsafe { libloading::Library::new(path) }
    }
}

/// The vtable after the load-time checks: every required slot present, the optional
/// ones as the plugin gave them.
#[derive(Clone, Copy)]
struct Functions {
    put_batch: Option<PutBatchFn>,
    get_batch: Option<GetBatchFn>,
    refresh: Option<RefreshFn>,
    create: CreateFn,
    destroy: DestroyFn,
    capability: CapabilityFn,
    capacity: SizeFn,
    used: SizeFn,
    put: PutFn,
    get: GetFn,
    len_of: LenOfFn,
    remove: RemoveFn,
    flush: ActionFn,
    clear: ActionFn,
    list_ids: ListFn,
    last_error: LastErrorFn,
}

impl Functions {
    fn from_vtable(vtable: &Vtable, origin: &str) -> Result<Self> {
        fn slot<F>(f: Option<F>, field: &str, origin: &str) -> Result<F> {
            f.ok_or_else(|| {
                Error::new(ErrorKind::Plugin, "plugin vtable has a NULL function")
                    .with_context("field", field)
                    .with_context("plugin", origin)
            })
        }
        Ok(Self {
            put_batch: vtable.put_batch,
            get_batch: vtable.get_batch,
            refresh: vtable.refresh,
            create: slot(vtable.create, "create", origin)?,
            destroy: slot(vtable.destroy, "destroy", origin)?,
            capability: slot(vtable.capability, "capability", origin)?,
            capacity: slot(vtable.capacity, "capacity", origin)?,
            used: slot(vtable.used, "used", origin)?,
            put: slot(vtable.put, "put", origin)?,
            get: slot(vtable.get, "get", origin)?,
            len_of: slot(vtable.len_of, "len_of", origin)?,
            remove: slot(vtable.remove, "remove", origin)?,
            flush: slot(vtable.flush, "flush", origin)?,
            clear: slot(vtable.clear, "clear", origin)?,
            list_ids: slot(vtable.list_ids, "list_ids", origin)?,
            last_error: slot(vtable.last_error, "last_error", origin)?,
        })
    }
}

/// Copies the first `struct_size` bytes of a plugin's table (whole pointer-sized slots
/// only) over an all-absent [`Vtable`]: slots a plugin built before them does not have
/// are never read, and stay NULL.
///
/// # Safety
/// `table` must point to at least `min(struct_size, size_of::<Vtable>())` readable bytes
/// laid out as the leading fields of [`Vtable`].
unsafe fn read_vtable(table: *const Vtable, struct_size: usize) -> Vtable {
    let slot = std::mem::size_of::<usize>();
    let len = struct_size.min(std::mem::size_of::<Vtable>()) / slot * slot;
    let mut vtable = std::mem::MaybeUninit::<Vtable>::zeroed();
    // SAFETY: `len` bytes are readable at `table` (caller) and fit in `vtable`; the two do
    // not overlap. All-zero bytes are a valid Vtable (integers, a NULL name, `None`
    // slots), and the copied bytes are whole fields the plugin set.
    unsafe {
        std::ptr::copy_nonoverlapping(table.cast::<u8>(), vtable.as_mut_ptr().cast::<u8>(), len);
        vtable.assume_init()
    }
}

/// A loaded plugin: the shared library and its checked vtable.
///
/// Every [`PluginTier`] holds an `Arc` of its library, so the library is open until the
/// last instance made from it is destroyed; on Unix its code then stays mapped for the
/// rest of the process (see `open_library`).
pub struct PluginLibrary {
    name: String,
    origin: String,
    functions: Functions,
    // Declared last so it is dropped (unmapped) after everything that points into it.
    _library: Option<libloading::Library>,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PluginLibrary {
    /// Loads the shared library at `path` and checks its entry symbol and ABI version.
    ///
    /// The path is made absolute first, so exactly the named file is loaded and never one
    /// found through the dynamic linker's search path.
    ///
    /// Errors: [`ErrorKind::Unavailable`] when the file does not exist;
    /// [`ErrorKind::Plugin`] when it cannot be loaded, lacks `cascade_plugin_entry`,
    /// speaks another ABI version, or has an incomplete vtable.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<Self>> {
        let path = path.as_ref();
        let absolute: PathBuf = std::fs::canonicalize(path).map_err(|e| {
            Error::new(ErrorKind::Unavailable, "plugin library not found")
                .with_context("path", path.display())
                .with_source(e)
        })?;
        let origin = absolute.display().to_string();
        // SAFETY: loading a library runs its initialisers with the rights of this process.
        // Only paths an operator wrote into the config reach this call; docs/plugins.md
        // states that a plugin is trusted code.
        let library = unsafe { open_library(&absolute) }.map_err(|e| {
            Error::new(ErrorKind::Plugin, "cannot load plugin library")
                .with_context("path", &origin)
                .with_source(e)
        })?;
        // SAFETY: the symbol's type is fixed by the ABI (`cascade-plugin.h`); a library
        // exporting the name with another type breaks the ABI contract it claims.
        let entry: EntryFn = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL_NUL) }
            .map(|symbol| *symbol)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Plugin,
                    format!("plugin library has no `{ENTRY_SYMBOL}` symbol"),
                )
                .with_context("path", &origin)
                .with_source(e)
            })?;
        // SAFETY: `entry` comes from the library loaded above, which `Self` keeps alive.
        unsafe { Self::from_entry(entry, origin, Some(library)) }
    }

    /// Wraps a plugin linked into this process (no shared library): `entry` is its
    /// `cascade_plugin_entry`. Used to test plugins and to measure the boundary alone.
    ///
    /// # Safety
    /// `entry` must follow the ABI in `cascade-plugin.h`, and the code and vtable it
    /// returns must stay valid for the life of the process.
    pub unsafe fn from_static_entry(
        entry: EntryFn,
        origin: impl Into<String>,
    ) -> Result<Arc<Self>> {
        // SAFETY: the caller promises a conforming, static entry.
        unsafe { Self::from_entry(entry, origin.into(), None) }
    }

    /// # Safety
    /// `entry` must be callable and, with everything it returns, stay valid as long as
    /// `library` (or the process, when `library` is `None`).
    unsafe fn from_entry(
        entry: EntryFn,
        origin: String,
        library: Option<libloading::Library>,
    ) -> Result<Arc<Self>> {
        let plugin_error = |message: &str| {
            Error::new(ErrorKind::Plugin, message.to_string()).with_context("plugin", &origin)
        };
        // SAFETY: the caller vouches for `entry`.
        let table = unsafe { entry() };
        if table.is_null() {
            return Err(plugin_error("cascade_plugin_entry returned NULL"));
        }
        // Only the two leading u32 fields are read before the version is known to match:
        // a plugin of another ABI may have a table of another size.
        // SAFETY: every ABI version starts the table with these two u32 fields, and the
        // pointer is non-null and points into the loaded library.
        let (abi_version, struct_size) = unsafe {
            (
                std::ptr::addr_of!((*table).abi_version).read(),
                std::ptr::addr_of!((*table).struct_size).read(),
            )
        };
        if abi_version != ABI_VERSION {
            return Err(plugin_error("plugin ABI version mismatch")
                .with_context("plugin_abi_version", abi_version)
                .with_context("host_abi_version", ABI_VERSION));
        }
        if (struct_size as usize) < MIN_VTABLE_SIZE {
            return Err(
                plugin_error("plugin vtable is smaller than this ABI version requires")
                    .with_context("struct_size", struct_size)
                    .with_context("expected", MIN_VTABLE_SIZE),
            );
        }
        // SAFETY: the table holds `struct_size` bytes (at least the required slots) laid
        // out as the leading fields of `Vtable` by the matching ABI version.
        let vtable = unsafe { read_vtable(table, struct_size as usize) };
        if vtable.name.is_null() {
            return Err(plugin_error("plugin vtable has a NULL name"));
        }
        // SAFETY: the ABI requires a NUL-terminated name that lives as long as the library.
        let name = unsafe { CStr::from_ptr(vtable.name) }
            .to_string_lossy()
            .into_owned();
        let functions = Functions::from_vtable(&vtable, &origin)?;
        Ok(Arc::new(Self {
            name,
            origin,
            functions,
            _library: library,
        }))
    }

    /// The name the plugin gives itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the plugin came from (the absolute library path).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Creates an instance named `tier_name` from `config`, the TOML text of its settings.
    ///
    /// Errors carry the plugin's own message; their kind follows the status the plugin
    /// returned (a bad setting is usually [`ErrorKind::Config`]).
    pub fn create(
        self: &Arc<Self>,
        tier_name: impl Into<String>,
        config: &str,
    ) -> Result<PluginTier> {
        let tier_name = tier_name.into();
        let mut instance: Instance = std::ptr::null_mut();
        // SAFETY: `config` is valid for `config.len()` bytes during the call and `instance`
        // is a valid place for the out-pointer.
        let status =
            unsafe { (self.functions.create)(config.as_ptr(), config.len(), &mut instance) };
        if status != Status::OK {
            return Err(self.error(std::ptr::null_mut(), status, &tier_name, "create"));
        }
        let instance = NonNull::new(instance).ok_or_else(|| {
            Error::new(
                ErrorKind::Plugin,
                "plugin create returned success but no instance",
            )
            .with_context("tier", &tier_name)
            .with_context("plugin", &self.name)
        })?;
        let mut tier = PluginTier {
            name: tier_name,
            instance,
            library: Arc::clone(self),
            capability: Capability {
                max_block_size: 0,
                ..Capability::default()
            },
        };
        let mut raw = RawCapability::default();
        // SAFETY: the instance is live and `raw` is a valid out-pointer.
        let status = unsafe { (self.functions.capability)(tier.raw(), &mut raw) };
        tier.check(status, "capability")?;
        let f = &self.functions;
        tier.capability = Capability {
            persistent: raw.flags & CAP_PERSISTENT != 0,
            device_memory: raw.flags & CAP_DEVICE_MEMORY != 0,
            // The plugin ABI names no device: a plugin's device memory is reached only
            // through the plugin's own device calls.
            device: None,
            shared: raw.flags & CAP_SHARED != 0,
            refresh: raw.flags & CAP_REFRESH != 0 && f.refresh.is_some(),
            batch_native: raw.flags & CAP_BATCH_NATIVE != 0
                && f.put_batch.is_some()
                && f.get_batch.is_some(),
            max_block_size: raw.max_block_size,
        };
        Ok(tier)
    }

    /// The typed error for a failed call: the status's kind and the plugin's message.
    fn error(&self, instance: Instance, status: Status, tier: &str, call: &'static str) -> Error {
        let kind = status.error_kind().unwrap_or(ErrorKind::Plugin);
        // SAFETY: `last_error` may be called with the instance (or NULL after a failed
        // create) on the thread that made the failed call; the text it returns is valid
        // until this thread's next call into the plugin, and is copied right away.
        let text = unsafe {
            let ptr = (self.functions.last_error)(instance);
            (!ptr.is_null()).then(|| CStr::from_ptr(ptr).to_string_lossy().into_owned())
        };
        let message = text
            .unwrap_or_else(|| format!("plugin returned status {} without a message", status.0));
        Error::new(kind, message)
            .with_context("tier", tier)
            .with_context("plugin", &self.name)
            .with_context("call", call)
            .with_context("path", &self.origin)
    }
}

/// One plugin instance used as a [`Tier`].
pub struct PluginTier {
    name: String,
    instance: NonNull<c_void>,
    capability: Capability,
    // Dropped after `Drop::drop` has destroyed the instance, keeping the code mapped.
    library: Arc<PluginLibrary>,
}

// SAFETY: the ABI requires every plugin function to be callable from any thread,
// concurrently, on one instance; the instance pointer itself is just an address.
unsafe impl Send for PluginTier {}
// SAFETY: as above.
unsafe impl Sync for PluginTier {}

impl PluginTier {
    /// The plugin this instance came from.
    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.library
    }

    fn raw(&self) -> Instance {
        self.instance.as_ptr()
    }

    fn f(&self) -> &Functions {
        &self.library.functions
    }

    fn check(&self, status: Status, call: &'static str) -> Result<()> {
        if status == Status::OK {
            Ok(())
        } else {
            Err(self.library.error(self.raw(), status, &self.name, call))
        }
    }
}

impl Drop for PluginTier {
    fn drop(&mut self) {
        // SAFETY: `&mut self` proves no call is in flight, and drop runs once.
        unsafe { (self.f().destroy)(self.raw()) };
    }
}

/// Collects the ids `list_ids` reports.
unsafe extern "C" fn collect_id(ctx: *mut c_void, id: *const RawBlockId, len: u64) {
    if ctx.is_null() || id.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `Vec` passed by `PluginTier::ids` for the duration of the
    // call, and `id` points to 16 readable bytes for the duration of this callback.
    unsafe {
        let ids = &mut *ctx.cast::<Vec<(BlockId, u64)>>();
        ids.push((BlockId::from_bytes((*id).bytes), len));
    }
}

fn raw_id(id: &BlockId) -> RawBlockId {
    RawBlockId {
        bytes: *id.as_bytes(),
    }
}

impl Tier for PluginTier {
    fn kind(&self) -> &str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn capability(&self) -> Capability {
        self.capability
    }

    fn capacity(&self) -> u64 {
        // SAFETY: the instance is live for `&self`.
        unsafe { (self.f().capacity)(self.raw()) }
    }

    fn used(&self) -> u64 {
        // SAFETY: the instance is live for `&self`.
        unsafe { (self.f().used)(self.raw()) }
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        let raw = raw_id(&id);
        // SAFETY: `raw` and `data` are valid for reads for the duration of the call.
        let status = unsafe { (self.f().put)(self.raw(), &raw, data.as_ptr(), data.len()) };
        self.check(status, "put")
            .map_err(|e| e.with_context("id", id))
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        let raw = raw_id(&id);
        let mut len = 0usize;
        // SAFETY: `out` is valid for writes of `out.len()` bytes and `len` for one usize.
        let status =
            unsafe { (self.f().get)(self.raw(), &raw, out.as_mut_ptr(), out.len(), &mut len) };
        self.check(status, "get")
            .map_err(|e| e.with_context("id", id))?;
        if len > out.len() {
            return Err(Error::new(
                ErrorKind::Plugin,
                "plugin reported more bytes than the buffer holds",
            )
            .with_context("tier", &self.name)
            .with_context("reported", len)
            .with_context("buffer_bytes", out.len()));
        }
        Ok(len)
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        let raw = raw_id(&id);
        let mut len = 0u64;
        // SAFETY: `raw` is readable and `len` writable for the duration of the call.
        let status = unsafe { (self.f().len_of)(self.raw(), &raw, &mut len) };
        match status {
            Status::OK => Some(len),
            Status::NOT_FOUND => None,
            _ => {
                let err = self.library.error(self.raw(), status, &self.name, "len_of");
                tracing::warn!(error = %err, "plugin len_of failed; treating the block as absent");
                None
            }
        }
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        let raw = raw_id(&id);
        let mut removed = 0u8;
        // SAFETY: `raw` is readable and `removed` writable for the duration of the call.
        let status = unsafe { (self.f().remove)(self.raw(), &raw, &mut removed) };
        self.check(status, "remove")
            .map_err(|e| e.with_context("id", id))?;
        Ok(removed != 0)
    }

    fn flush(&self) -> Result<()> {
        // SAFETY: the instance is live for `&self`.
        let status = unsafe { (self.f().flush)(self.raw()) };
        self.check(status, "flush")
    }

    fn clear(&self) -> Result<()> {
        // SAFETY: the instance is live for `&self`.
        let status = unsafe { (self.f().clear)(self.raw()) };
        self.check(status, "clear")
    }

    fn ids(&self) -> Vec<(BlockId, u64)> {
        let mut ids: Vec<(BlockId, u64)> = Vec::new();
        // SAFETY: `collect_id` matches `IdVisitor` and only touches `ids`, which outlives
        // the call; the plugin calls it only during `list_ids`.
        let status = unsafe {
            (self.f().list_ids)(
                self.raw(),
                collect_id,
                (&mut ids as *mut Vec<(BlockId, u64)>).cast(),
            )
        };
        if let Err(err) = self.check(status, "list_ids") {
            tracing::warn!(error = %err, listed = ids.len(), "plugin list_ids failed; the list is partial");
        }
        ids
    }

    fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<()>> {
        // The batch slots only where the plugin says they beat one call per block: a
        // plugin's own per-block loop would run on a thread pool of its own.
        let native = self.f().put_batch.filter(|_| self.capability.batch_native);
        let Some(put_batch) = native else {
            // As the trait's default: the puts in parallel on the rayon pool.
            return items
                .par_iter()
                .map(|(id, data)| self.put(*id, data))
                .collect();
        };
        let ids: Vec<RawBlockId> = items.iter().map(|(id, _)| raw_id(id)).collect();
        let data: Vec<*const u8> = items.iter().map(|(_, d)| d.as_ptr()).collect();
        let lens: Vec<usize> = items.iter().map(|(_, d)| d.len()).collect();
        let mut statuses = vec![Status::PLUGIN; items.len()];
        // SAFETY: the four arrays hold `items.len()` entries each, every data pointer is
        // readable for its length, and `statuses` is writable, all for the call.
        let status = unsafe {
            put_batch(
                self.raw(),
                ids.as_ptr(),
                data.as_ptr(),
                lens.as_ptr(),
                items.len(),
                statuses.as_mut_ptr(),
            )
        };
        let ids: Vec<BlockId> = items.iter().map(|(id, _)| *id).collect();
        self.batch_results(status, "put_batch", &ids, &statuses)
    }

    fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<usize>> {
        let native = self.f().get_batch.filter(|_| self.capability.batch_native);
        let Some(get_batch) = native else {
            return items
                .par_iter_mut()
                .map(|(id, out)| self.get(*id, out))
                .collect();
        };
        let ids: Vec<RawBlockId> = items.iter().map(|(id, _)| raw_id(id)).collect();
        let caps: Vec<usize> = items.iter().map(|(_, out)| out.len()).collect();
        let outs: Vec<*mut u8> = items.iter_mut().map(|(_, out)| out.as_mut_ptr()).collect();
        let mut lens = vec![0usize; items.len()];
        let mut statuses = vec![Status::PLUGIN; items.len()];
        // SAFETY: the arrays hold `items.len()` entries each, every output pointer is
        // writable for its capacity, and `lens` / `statuses` are writable, all for the call.
        let status = unsafe {
            get_batch(
                self.raw(),
                ids.as_ptr(),
                outs.as_ptr(),
                caps.as_ptr(),
                items.len(),
                lens.as_mut_ptr(),
                statuses.as_mut_ptr(),
            )
        };
        let block_ids: Vec<BlockId> = items.iter().map(|(id, _)| *id).collect();
        self.batch_results(status, "get_batch", &block_ids, &statuses)
            .into_iter()
            .zip(lens.iter().zip(&caps))
            .map(|(result, (&len, &cap))| {
                result?;
                if len > cap {
                    return Err(Error::new(
                        ErrorKind::Plugin,
                        "plugin reported more bytes than the buffer holds",
                    )
                    .with_context("tier", &self.name)
                    .with_context("reported", len)
                    .with_context("buffer_bytes", cap));
                }
                Ok(len)
            })
            .collect()
    }

    fn refresh(&self) -> Result<TierRefresh> {
        let Some(refresh) = self.f().refresh else {
            return Ok(TierRefresh::default());
        };
        let mut found = TierRefresh::default();
        // SAFETY: both visitors match `IdVisitor` and only touch `found`, which outlives
        // the call; the plugin calls them only during `refresh`.
        let status = unsafe {
            refresh(
                self.raw(),
                collect_added,
                collect_removed,
                (&mut found as *mut TierRefresh).cast(),
            )
        };
        self.check(status, "refresh")?;
        Ok(found)
    }
}

impl PluginTier {
    /// One result per item of a batch call: the whole call's error for every item, or
    /// each item's own status.
    fn batch_results(
        &self,
        status: Status,
        call: &'static str,
        ids: &[BlockId],
        statuses: &[Status],
    ) -> Vec<Result<()>> {
        if status != Status::OK {
            let error = self.library.error(self.raw(), status, &self.name, call);
            return ids.iter().map(|_| Err(error.clone())).collect();
        }
        ids.iter()
            .zip(statuses)
            .map(|(id, &item)| match item.error_kind() {
                None => Ok(()),
                Some(ErrorKind::NotFound) => {
                    Err(Error::not_found(*id).with_context("tier", &self.name))
                }
                Some(kind) => Err(Error::new(kind, format!("plugin {call} item failed"))
                    .with_context("tier", &self.name)
                    .with_context("plugin", &self.library.name)
                    .with_context("status", item.0)
                    .with_context("id", id)),
            })
            .collect()
    }
}

/// Collects the blocks `refresh` reports as added.
unsafe extern "C" fn collect_added(ctx: *mut c_void, id: *const RawBlockId, len: u64) {
    if ctx.is_null() || id.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `TierRefresh` passed by `PluginTier::refresh` for the duration
    // of the call, and `id` points to 16 readable bytes for the duration of this callback.
    unsafe {
        let found = &mut *ctx.cast::<TierRefresh>();
        found.added.push((BlockId::from_bytes((*id).bytes), len));
    }
}

/// Collects the blocks `refresh` reports as removed.
unsafe extern "C" fn collect_removed(ctx: *mut c_void, id: *const RawBlockId, _len: u64) {
    if ctx.is_null() || id.is_null() {
        return;
    }
    // SAFETY: as in `collect_added`.
    unsafe {
        let found = &mut *ctx.cast::<TierRefresh>();
        found.removed.push(BlockId::from_bytes((*id).bytes));
    }
}
