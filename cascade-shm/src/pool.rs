//! The pool file: open or create it, lock it for one writer, reserve its space, map it,
//! and fault its pages in.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use cascade_core::{Access, Error, ErrorKind, Result};
use memmap2::{MmapMut, MmapOptions};
use rayon::prelude::*;

use crate::layout::{HEADER_LEN, Layout};

/// Pages are faulted in by this many bytes per rayon task.
const PREFAULT_CHUNK: usize = 32 << 20;
const PAGE: usize = 4096;

/// An open, locked, mapped pool file. The lock and the mapping end on drop.
pub struct Pool {
    map: MmapMut,
    base: NonNull<u8>,
    layout: Layout,
    created: bool,
    // Declared after `map`: the lock is released only once the mapping is gone.
    _file: File,
}

impl Pool {
    /// Opens the pool at `path`, creating it with `wanted` when absent.
    ///
    /// An existing pool must have the wanted layout; a foreign, damaged or differently
    /// sized file is refused and left as it is.
    pub fn open(path: &Path, wanted: Layout, prefault: bool) -> Result<Self> {
        let (file, created_now) = open_or_create(path)?;
        lock_exclusive(&file, path)?;
        let len = file
            .metadata()
            .map_err(|e| {
                Error::io("cannot stat the shm pool", e).with_context("path", path.display())
            })?
            .len();
        let fresh = len == 0 || header_is_blank(&file, len, path)?;
        if fresh {
            if len > 0 {
                tracing::warn!(path = %path.display(), "shm pool creation was interrupted earlier; initialising it again");
            }
            if let Err(err) = reserve(&file, path, wanted.file_len()) {
                if created_now {
                    let _ = std::fs::remove_file(path);
                } else {
                    let _ = file.set_len(len);
                }
                return Err(err);
            }
        } else {
            let layout = read_layout(&file, len, path)?;
            check_same_layout(layout, wanted, path)?;
        }
        let mut map = map_file(&file, wanted.file_len(), path)?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| Error::new(ErrorKind::Io, "mmap returned a null address"))?;
        let mut pool = Self {
            map,
            base,
            layout: wanted,
            created: fresh,
            _file: file,
        };
        if prefault {
            pool.prefault()?;
        }
        if fresh {
            pool.initialise()?;
        }
        Ok(pool)
    }

    /// Whether this open created (or re-initialised) the pool.
    pub fn created(&self) -> bool {
        self.created
    }

    /// First byte of the mapping.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Writes dirty pages back (a no-op cost on tmpfs; real on a disk-backed pool).
    pub fn sync(&self) -> Result<()> {
        self.map
            .flush()
            .map_err(|e| Error::io("msync of the shm pool failed", e))
    }

    /// Zeroes the slot table, then writes the header last: a pool whose creation was
    /// interrupted has a blank header and is initialised again on the next open.
    fn initialise(&mut self) -> Result<()> {
        let table_start = self.layout.slot_table_offset as usize;
        let table_end = self.layout.data_offset as usize;
        self.map[table_start..table_end].fill(0);
        self.map
            .flush_range(table_start, table_end - table_start)
            .map_err(|e| Error::io("msync of the shm slot table failed", e))?;
        let header = self.layout.encode();
        self.map[..header.len()].copy_from_slice(&header);
        self.map
            .flush_range(0, header.len())
            .map_err(|e| Error::io("msync of the shm pool header failed", e))
    }

    /// Maps every page, in parallel, so no put pays a page fault later.
    fn prefault(&mut self) -> Result<()> {
        let len = self.map.len();
        let base = self.base.as_ptr() as usize;
        (0..len.div_ceil(PREFAULT_CHUNK))
            .into_par_iter()
            .try_for_each(|chunk| {
                let start = chunk * PREFAULT_CHUNK;
                let end = (start + PREFAULT_CHUNK).min(len);
                // SAFETY: [start, end) lies inside the mapping, which outlives this call.
                unsafe { populate(base + start, end - start) }
            })
            .map_err(|e| Error::io("cannot fault in the shm pool's pages", e))
    }
}

/// Maps `[addr, addr + len)` into the page table with `MADV_POPULATE_READ` (Linux
/// 5.10+), or by reading one byte per page on older kernels.
///
/// Read faults on a file mapping map up to 16 cached pages at once, writable when the
/// mapping is shared and writable, so this is about three times faster here than
/// `MADV_POPULATE_WRITE`, and later writes to those pages take no fault. The pages
/// already exist: a new pool's were allocated by `posix_fallocate`.
///
/// # Safety
/// The range must lie inside a live mapping.
unsafe fn populate(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is a live mapping; the advice only fills
    // page-table entries.
    let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_READ) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    for offset in (0..len).step_by(PAGE) {
        // SAFETY: the byte is inside the mapping; a volatile read has no other effect.
        unsafe { ((addr + offset) as *const u8).read_volatile() };
    }
    Ok(())
}

fn open_or_create(path: &Path) -> Result<(File, bool)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "the directory for the shm pool does not exist; set `path` to a file on another file system (e.g. path = \"{}\")",
                suggestion(path).display()
            ),
        )
        .with_context("path", path.display()));
    }
    for _ in 0..3 {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                Access::PRIVATE.warn_if_exposed(path, "shm pool");
                return Ok((file, false));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_error(e, path)),
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            // Exactly 0600: the mode given to open is reduced by the umask.
            Ok(file) => {
                Access::PRIVATE
                    .restrict_new_file(&file)
                    .map_err(|e| open_error(e, path))?;
                return Ok((file, true));
            }
            // Another process created it between the two calls: open theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_error(e, path)),
        }
    }
    Err(Error::new(
        ErrorKind::Busy,
        "the shm pool file keeps appearing and vanishing",
    )
    .with_context("path", path.display()))
}

fn open_error(e: io::Error, path: &Path) -> Error {
    Error::new(ErrorKind::Io, "cannot open the shm pool file")
        .with_context("path", path.display())
        .with_source(e)
}

fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(Error::new(
            ErrorKind::Busy,
            "the shm pool is open for writing by another process (or another tier of this one); \
             a pool has one writer: stop the other user or give this tier another `path`",
        )
        .with_context("path", path.display()));
    }
    Err(Error::io("cannot lock the shm pool file", err).with_context("path", path.display()))
}

/// True when the first page reads as zeros: a creation that died before its header.
fn header_is_blank(file: &File, len: u64, path: &Path) -> Result<bool> {
    let mut page = vec![0u8; len.min(HEADER_LEN) as usize];
    file.read_exact_at(&mut page, 0).map_err(|e| {
        Error::io("cannot read the shm pool header", e).with_context("path", path.display())
    })?;
    Ok(page.iter().all(|&b| b == 0))
}

fn read_layout(file: &File, len: u64, path: &Path) -> Result<Layout> {
    let mut page = vec![0u8; len.min(HEADER_LEN) as usize];
    file.read_exact_at(&mut page, 0).map_err(|e| {
        Error::io("cannot read the shm pool header", e).with_context("path", path.display())
    })?;
    Layout::decode(&page, len).map_err(|e| e.with_context("path", path.display()))
}

fn check_same_layout(found: Layout, wanted: Layout, path: &Path) -> Result<()> {
    if found.data_len != wanted.data_len || found.slot_count != wanted.slot_count {
        return Err(Error::new(
            ErrorKind::Incompatible,
            "the shm pool exists with another capacity or max_blocks; set them to the pool's values, or move the file away to start a new pool",
        )
        .with_context("path", path.display())
        .with_context("pool_capacity_bytes", found.data_len)
        .with_context("pool_max_blocks", found.slot_count)
        .with_context("config_capacity_bytes", wanted.data_len)
        .with_context("config_max_blocks", wanted.slot_count));
    }
    Ok(())
}

/// Sizes the file and reserves its pages, so a full file system is an error here rather
/// than a SIGBUS on some later put.
fn reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    if let Some(available) = free_bytes(path) {
        let existing = file.metadata().map(|m| m.len()).unwrap_or(0);
        if available + existing < len {
            return Err(too_small(path, len, Some(available)));
        }
    }
    file.set_len(len).map_err(|e| {
        Error::io("cannot size the shm pool file", e).with_context("path", path.display())
    })?;
    let size = libc::off_t::try_from(len).map_err(|_| Error::config("capacity too large"))?;
    // SAFETY: the descriptor is open; posix_fallocate only changes the file's allocation.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size) };
    match rc {
        0 => Ok(()),
        libc::ENOSPC => Err(too_small(path, len, free_bytes(path))),
        // File systems without fallocate: the free-space check above has to do.
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        errno => Err(Error::io(
            "cannot reserve space for the shm pool",
            io::Error::from_raw_os_error(errno),
        )
        .with_context("path", path.display())),
    }
}

fn too_small(path: &Path, need: u64, available: Option<u64>) -> Error {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut err = Error::new(
        ErrorKind::Unavailable,
        format!(
            "not enough free space in {} for the shm pool; lower `capacity`, or set `path` to a file system with room (e.g. path = \"{}\")",
            dir.display(),
            suggestion(path).display()
        ),
    )
    .with_context("path", path.display())
    .with_context("need_bytes", need);
    if let Some(available) = available {
        err = err.with_context("available_bytes", available);
    }
    err
}

/// Another place for the pool: /tmp when it was under /dev/shm, else /dev/shm.
fn suggestion(path: &Path) -> PathBuf {
    let file = path
        .file_name()
        .map_or_else(|| "cascade.pool".into(), |f| f.to_os_string());
    if path.starts_with("/dev/shm") {
        Path::new("/tmp").join(file)
    } else {
        Path::new("/dev/shm").join(file)
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_dir is a valid C string and stat points to writable memory of the right type.
    let rc = unsafe { libc::statvfs(c_dir.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

fn map_file(file: &File, len: u64, path: &Path) -> Result<MmapMut> {
    let len =
        usize::try_from(len).map_err(|_| Error::config("capacity exceeds the address space"))?;
    // SAFETY: the file is locked for this process, so no cooperating process truncates or
    // rewrites it while mapped; the mapping's length matches the file's.
    unsafe { MmapOptions::new().len(len).map_mut(file) }.map_err(|e| {
        Error::io("cannot map the shm pool", e)
            .with_context("path", path.display())
            .with_context("bytes", len)
    })
}
