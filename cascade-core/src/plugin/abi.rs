//! The plugin ABI: plain C types shared with `plugins/cascade-plugin.h`.
//!
//! Everything here is `#[repr(C)]` and uses only fixed-width integers, pointers and
//! `extern "C"` function pointers, so a plugin may be written in any language that can
//! export a C function. The header is kept in step by a test that compiles it against
//! the sizes and offsets below.
//!
//! Rules every plugin follows (the header repeats them):
//! - every function may be called from many threads at once on one instance;
//! - a function returns a [`Status`]; on anything but [`Status::OK`] the plugin keeps a
//!   message that `last_error` returns to the same thread until that thread's next call;
//! - pointers handed to the plugin are valid only for the duration of the call;
//! - no panic, C++ exception or `longjmp` may leave a plugin function.

use std::ffi::{c_char, c_void};

use crate::ErrorKind;

/// The ABI version this build of Cascade speaks. A plugin built for another version is
/// refused at load time with [`ErrorKind::Plugin`].
pub const ABI_VERSION: u32 = 1;

/// The symbol every plugin exports: `const cascade_plugin_vtable *cascade_plugin_entry(void)`.
pub const ENTRY_SYMBOL: &str = "cascade_plugin_entry";

/// The same symbol with its terminating NUL, as libloading wants it.
pub(crate) const ENTRY_SYMBOL_NUL: &[u8] = b"cascade_plugin_entry\0";

/// The result of a plugin call (`int32_t` in C). Values other than those named here are
/// treated as [`Status::PLUGIN`].
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub i32);

impl Status {
    /// Success.
    pub const OK: Self = Self(0);
    /// The block is not stored.
    pub const NOT_FOUND: Self = Self(1);
    /// No room now; the store demotes colder blocks and retries.
    pub const TIER_FULL: Self = Self(2);
    /// The block is larger than the tier can ever hold.
    pub const TOO_LARGE: Self = Self(3);
    /// Stored bytes failed their checksum.
    pub const CORRUPT: Self = Self(4);
    /// An I/O or network error.
    pub const IO: Self = Self(5);
    /// The settings given to `create` are invalid.
    pub const CONFIG: Self = Self(6);
    /// A resource the plugin needs is absent (a server down, a device missing).
    pub const UNAVAILABLE: Self = Self(7);
    /// Any other failure inside the plugin (a caught panic, an internal error).
    pub const PLUGIN: Self = Self(8);
    /// Bad arguments, including an output buffer shorter than the block.
    pub const INVALID_INPUT: Self = Self(9);
    /// Data written by an incompatible version.
    pub const INCOMPATIBLE: Self = Self(10);
    /// The resource is held by someone else.
    pub const BUSY: Self = Self(11);
    /// The plugin does not support this operation.
    pub const UNSUPPORTED: Self = Self(12);

    /// The error kind a status maps to; `None` for [`Status::OK`].
    pub fn error_kind(self) -> Option<ErrorKind> {
        Some(match self {
            Self::OK => return None,
            Self::NOT_FOUND => ErrorKind::NotFound,
            Self::TIER_FULL => ErrorKind::TierFull,
            Self::TOO_LARGE => ErrorKind::TooLarge,
            Self::CORRUPT => ErrorKind::Corrupt,
            Self::IO => ErrorKind::Io,
            Self::CONFIG => ErrorKind::Config,
            Self::UNAVAILABLE => ErrorKind::Unavailable,
            Self::INVALID_INPUT => ErrorKind::InvalidInput,
            Self::INCOMPATIBLE => ErrorKind::Incompatible,
            Self::BUSY => ErrorKind::Busy,
            Self::UNSUPPORTED => ErrorKind::Unsupported,
            _ => ErrorKind::Plugin,
        })
    }

    /// The status a plugin returns for an error of `kind`.
    pub fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => Self::NOT_FOUND,
            ErrorKind::TierFull => Self::TIER_FULL,
            ErrorKind::TooLarge => Self::TOO_LARGE,
            ErrorKind::Corrupt => Self::CORRUPT,
            ErrorKind::Io => Self::IO,
            ErrorKind::Config => Self::CONFIG,
            ErrorKind::Unavailable => Self::UNAVAILABLE,
            ErrorKind::InvalidInput => Self::INVALID_INPUT,
            ErrorKind::Incompatible => Self::INCOMPATIBLE,
            ErrorKind::Busy => Self::BUSY,
            ErrorKind::Unsupported => Self::UNSUPPORTED,
            _ => Self::PLUGIN,
        }
    }
}

/// A block id as the plugin sees it: 16 raw bytes (`cascade_block_id` in C).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawBlockId {
    /// The id's bytes, in [`crate::BlockId::as_bytes`] order.
    pub bytes: [u8; 16],
}

/// Bit of [`RawCapability::flags`]: blocks survive the process.
pub const CAP_PERSISTENT: u32 = 1;
/// Bit of [`RawCapability::flags`]: bytes live in device (GPU) memory.
pub const CAP_DEVICE_MEMORY: u32 = 2;
/// Bit of [`RawCapability::flags`]: several instances, in several processes, share the
/// storage and see each other's blocks ([`crate::Capability::shared`]).
pub const CAP_SHARED: u32 = 4;
/// Bit of [`RawCapability::flags`]: the `refresh` slot reports other instances' changes
/// ([`crate::Capability::refresh`]); read only when the slot is filled in.
pub const CAP_REFRESH: u32 = 8;
/// Bit of [`RawCapability::flags`]: the `put_batch` / `get_batch` slots do better than
/// one call per block ([`crate::Capability::batch_native`]); read only when both slots
/// are filled in.
pub const CAP_BATCH_NATIVE: u32 = 16;

/// What an instance can do (`cascade_plugin_capability` in C).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawCapability {
    /// Largest single block the instance accepts, in bytes.
    pub max_block_size: u64,
    /// [`CAP_PERSISTENT`] | [`CAP_DEVICE_MEMORY`].
    pub flags: u32,
    /// Zero; room for later use without changing the layout.
    pub reserved: u32,
}

/// An opaque plugin instance (`cascade_plugin_instance *` in C).
pub type Instance = *mut c_void;

/// Receives one id and its stored length from `list_ids` (and `refresh`); `ctx` is the
/// caller's pointer.
pub type IdVisitor = unsafe extern "C" fn(ctx: *mut c_void, id: *const RawBlockId, len: u64);

/// `put_batch`: stores `count` blocks, `ids[i]` with the `lens[i]` bytes at `data[i]`,
/// writing each item's status to `statuses[i]`. Returns [`Status::OK`] when every item
/// was tried (the statuses then tell each outcome), or an error for the whole call (the
/// statuses are then not read).
pub type PutBatchFn = unsafe extern "C" fn(
    instance: Instance,
    ids: *const RawBlockId,
    data: *const *const u8,
    lens: *const usize,
    count: usize,
    statuses: *mut Status,
) -> Status;

/// `get_batch`: reads `count` blocks, `ids[i]` into the `caps[i]` bytes at `outs[i]`,
/// writing each length to `out_lens[i]` and each status to `statuses[i]` (a short
/// buffer: [`Status::INVALID_INPUT`]). Returns as [`PutBatchFn`].
pub type GetBatchFn = unsafe extern "C" fn(
    instance: Instance,
    ids: *const RawBlockId,
    outs: *const *mut u8,
    caps: *const usize,
    count: usize,
    out_lens: *mut usize,
    statuses: *mut Status,
) -> Status;

/// `refresh`: looks at the shared storage again and calls `added(ctx, id, len)` for every
/// block another instance stored or replaced since this instance opened or last
/// refreshed, and `removed(ctx, id, 0)` for every block another instance removed.
pub type RefreshFn = unsafe extern "C" fn(
    instance: Instance,
    added: IdVisitor,
    removed: IdVisitor,
    ctx: *mut c_void,
) -> Status;

/// The table of functions a plugin exports (`cascade_plugin_vtable` in C).
///
/// Fields are only ever appended; `struct_size` tells the loader how many the plugin
/// filled in (fields past it are absent), and `abi_version` changes when a field's
/// meaning changes. Function slots are
/// `Option` so that a NULL left by a C plugin is reported at load time (an `Option` of a
/// function pointer has the layout of a plain C function pointer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Vtable {
    /// [`ABI_VERSION`] of the header the plugin was built against.
    pub abi_version: u32,
    /// `sizeof(cascade_plugin_vtable)` as the plugin saw it.
    pub struct_size: u32,
    /// The plugin's name, NUL-terminated, valid as long as the library is loaded.
    pub name: *const c_char,
    /// Builds an instance from its settings: `config` is TOML text (UTF-8, `config_len`
    /// bytes, not NUL-terminated). On success writes the instance to `*out`.
    /// On failure `last_error(NULL)` returns the message to the calling thread.
    pub create: Option<
        unsafe extern "C" fn(config: *const u8, config_len: usize, out: *mut Instance) -> Status,
    >,
    /// Releases an instance; called exactly once, after every other call on it returned.
    pub destroy: Option<unsafe extern "C" fn(instance: Instance)>,
    /// Fills `*out` with what the instance can do.
    pub capability:
        Option<unsafe extern "C" fn(instance: Instance, out: *mut RawCapability) -> Status>,
    /// Total bytes the instance may hold.
    pub capacity: Option<unsafe extern "C" fn(instance: Instance) -> u64>,
    /// Bytes currently allocated to blocks; never above `capacity`.
    pub used: Option<unsafe extern "C" fn(instance: Instance) -> u64>,
    /// Stores `len` bytes under `id`, replacing an older block of the same id.
    pub put: Option<
        unsafe extern "C" fn(
            instance: Instance,
            id: *const RawBlockId,
            data: *const u8,
            len: usize,
        ) -> Status,
    >,
    /// Copies the block into `out` (capacity `out_cap`) and writes its length to
    /// `*out_len`. When `out_cap` is too small: [`Status::INVALID_INPUT`], with the
    /// block's length in `*out_len`.
    pub get: Option<
        unsafe extern "C" fn(
            instance: Instance,
            id: *const RawBlockId,
            out: *mut u8,
            out_cap: usize,
            out_len: *mut usize,
        ) -> Status,
    >,
    /// Writes the stored length to `*out_len`, or returns [`Status::NOT_FOUND`].
    pub len_of: Option<
        unsafe extern "C" fn(
            instance: Instance,
            id: *const RawBlockId,
            out_len: *mut u64,
        ) -> Status,
    >,
    /// Removes `id`; writes 1 to `*removed` when it was present, else 0.
    pub remove: Option<
        unsafe extern "C" fn(instance: Instance, id: *const RawBlockId, removed: *mut u8) -> Status,
    >,
    /// Makes everything stored so far durable, or does nothing.
    pub flush: Option<unsafe extern "C" fn(instance: Instance) -> Status>,
    /// Removes every block.
    pub clear: Option<unsafe extern "C" fn(instance: Instance) -> Status>,
    /// Calls `visit(ctx, id, len)` once for every block held.
    pub list_ids: Option<
        unsafe extern "C" fn(instance: Instance, visit: IdVisitor, ctx: *mut c_void) -> Status,
    >,
    /// The message of the calling thread's last failed call on `instance` (or of its last
    /// failed `create` when `instance` is NULL), NUL-terminated, valid until that thread's
    /// next call into the plugin; NULL when there is none.
    pub last_error: Option<unsafe extern "C" fn(instance: Instance) -> *const c_char>,

    // Optional slots, appended in ABI version 1 without changing its meaning: a plugin
    // built before them has a smaller `struct_size` (at least [`MIN_VTABLE_SIZE`]) and
    // the loader treats them as absent; a plugin may also leave any of them NULL.
    /// Optional ([`PutBatchFn`]); NULL: the host calls `put` once per block.
    pub put_batch: Option<PutBatchFn>,
    /// Optional ([`GetBatchFn`]); NULL: the host calls `get` once per block.
    pub get_batch: Option<GetBatchFn>,
    /// Optional ([`RefreshFn`]); NULL: refresh reports nothing.
    pub refresh: Option<RefreshFn>,
}

/// The smallest `struct_size` the loader accepts: the table up to `last_error`, as
/// plugins built before the optional slots have it.
pub const MIN_VTABLE_SIZE: usize = std::mem::offset_of!(Vtable, put_batch);

/// The type of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const Vtable;

/// Size and field offsets of the ABI structs, for the header test and for authors of
/// bindings in other languages.
pub fn layout() -> Vec<(&'static str, usize)> {
    use std::mem::{offset_of, size_of};
    vec![
        ("SIZEOF_BLOCK_ID", size_of::<RawBlockId>()),
        ("SIZEOF_CAPABILITY", size_of::<RawCapability>()),
        (
            "OFFSETOF_CAPABILITY_FLAGS",
            offset_of!(RawCapability, flags),
        ),
        ("SIZEOF_VTABLE", size_of::<Vtable>()),
        ("OFFSETOF_ABI_VERSION", offset_of!(Vtable, abi_version)),
        ("OFFSETOF_STRUCT_SIZE", offset_of!(Vtable, struct_size)),
        ("OFFSETOF_NAME", offset_of!(Vtable, name)),
        ("OFFSETOF_CREATE", offset_of!(Vtable, create)),
        ("OFFSETOF_DESTROY", offset_of!(Vtable, destroy)),
        ("OFFSETOF_CAPABILITY", offset_of!(Vtable, capability)),
        ("OFFSETOF_CAPACITY", offset_of!(Vtable, capacity)),
        ("OFFSETOF_USED", offset_of!(Vtable, used)),
        ("OFFSETOF_PUT", offset_of!(Vtable, put)),
        ("OFFSETOF_GET", offset_of!(Vtable, get)),
        ("OFFSETOF_LEN_OF", offset_of!(Vtable, len_of)),
        ("OFFSETOF_REMOVE", offset_of!(Vtable, remove)),
        ("OFFSETOF_FLUSH", offset_of!(Vtable, flush)),
        ("OFFSETOF_CLEAR", offset_of!(Vtable, clear)),
        ("OFFSETOF_LIST_IDS", offset_of!(Vtable, list_ids)),
        ("OFFSETOF_LAST_ERROR", offset_of!(Vtable, last_error)),
        ("OFFSETOF_PUT_BATCH", offset_of!(Vtable, put_batch)),
        ("OFFSETOF_GET_BATCH", offset_of!(Vtable, get_batch)),
        ("OFFSETOF_REFRESH", offset_of!(Vtable, refresh)),
        ("MIN_VTABLE_SIZE", MIN_VTABLE_SIZE),
        ("ABI_VERSION", ABI_VERSION as usize),
        ("STATUS_OK", Status::OK.0 as usize),
        ("STATUS_NOT_FOUND", Status::NOT_FOUND.0 as usize),
        ("STATUS_TIER_FULL", Status::TIER_FULL.0 as usize),
        ("STATUS_TOO_LARGE", Status::TOO_LARGE.0 as usize),
        ("STATUS_CORRUPT", Status::CORRUPT.0 as usize),
        ("STATUS_IO", Status::IO.0 as usize),
        ("STATUS_CONFIG", Status::CONFIG.0 as usize),
        ("STATUS_UNAVAILABLE", Status::UNAVAILABLE.0 as usize),
        ("STATUS_PLUGIN", Status::PLUGIN.0 as usize),
        ("STATUS_INVALID_INPUT", Status::INVALID_INPUT.0 as usize),
        ("STATUS_INCOMPATIBLE", Status::INCOMPATIBLE.0 as usize),
        ("STATUS_BUSY", Status::BUSY.0 as usize),
        ("STATUS_UNSUPPORTED", Status::UNSUPPORTED.0 as usize),
        ("CAP_PERSISTENT", CAP_PERSISTENT as usize),
        ("CAP_DEVICE_MEMORY", CAP_DEVICE_MEMORY as usize),
        ("CAP_SHARED", CAP_SHARED as usize),
        ("CAP_REFRESH", CAP_REFRESH as usize),
        ("CAP_BATCH_NATIVE", CAP_BATCH_NATIVE as usize),
    ]
}
