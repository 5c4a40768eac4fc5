//! Positioned and vectored file I/O, page-aligned buffers, and page-cache control.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::format::{PAGE, ReadAt};

/// Most iovecs one `preadv`/`pwritev` call takes (IOV_MAX on Linux).
pub(crate) const IOV_MAX: usize = 1024;

/// A byte buffer whose usable part starts on a page boundary, as O_DIRECT requires.
///
/// The memory is kept between uses: this VM hands idle memory back to the host, and
/// touching fresh pages costs ten times more than reusing warm ones.
#[derive(Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A page-aligned, zeroed slice of `len` bytes (contents from earlier uses are
    /// cleared only where `zero` asks for it).
    pub fn get(&mut self, len: usize, zero: bool) -> &mut [u8] {
        let page = PAGE as usize;
        if self.raw.len() < len + page {
            let want = (len + page).max(self.raw.len() * 2);
            self.raw = vec![0u8; want];
            self.start = self.raw.as_ptr().align_offset(page);
        } else if zero {
            self.raw[self.start..self.start + len].fill(0);
        }
        self.len = len;
        &mut self.raw[self.start..self.start + len]
    }

    /// The slice handed out by the last [`AlignedBuf::get`].
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

thread_local! {
    static SCRATCH: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// Runs `f` with this thread's reusable aligned buffer.
pub fn with_scratch<R>(f: impl FnOnce(&mut AlignedBuf) -> R) -> R {
    SCRATCH.with(|cell| f(&mut cell.borrow_mut()))
}

/// Opens a file for reading and writing, with O_DIRECT when `direct`.
pub fn open_file(path: &Path, create: bool, direct: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(create);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

/// Whether O_DIRECT can be used in `dir` (tmpfs and some FUSE mounts refuse it).
pub fn direct_io_supported(dir: &Path) -> bool {
    let probe = dir.join(".cascade-direct-probe");
    let ok = open_file(&probe, true, true).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Reads exactly `buf.len()` bytes unless the file ends first; returns the count read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match FileExt::read_at(file, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads the page-aligned range covering `[offset, offset + len)` into `buf` (so it works
/// under O_DIRECT) and returns the wanted bytes; shorter at the end of the file.
pub fn read_aligned<'a>(
    file: &File,
    buf: &'a mut AlignedBuf,
    offset: u64,
    len: usize,
) -> io::Result<&'a [u8]> {
    let start = offset - offset % PAGE;
    let skip = (offset - start) as usize;
    let span = (skip + len).div_ceil(PAGE as usize) * PAGE as usize;
    let target = buf.get(span, false);
    let n = read_full_at(file, target, start)?;
    let end = n.min(skip + len);
    Ok(&buf.as_slice()[skip.min(end)..end])
}

/// Writes all of `bufs` back to back at `offset` with as few `pwritev` calls as possible.
pub fn write_all_vectored_at(file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    let mut at = offset;
    while !rest.is_empty() {
        let count = rest.len().min(IOV_MAX);
        let offset =
            libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: IoSlice is ABI compatible with iovec on Unix; every entry points into a
        // slice of `bufs`, borrowed for this call, and pwritev only reads from them.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                rest.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                offset,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        at += n as u64;
        IoSlice::advance_slices(&mut rest, n as usize);
    }
    Ok(())
}

/// Fills `bufs` back to back from `offset` with as few `preadv` calls as possible;
/// returns the bytes read (less than the total only at the end of the file).
pub fn read_vectored_at(file: &File, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<usize> {
    let mut slices: Vec<IoSliceMut<'_>> = bufs
        .iter_mut()
        .filter(|b| !b.is_empty())
        .map(|b| IoSliceMut::new(b))
        .collect();
    let mut rest: &mut [IoSliceMut<'_>] = &mut slices;
    let mut total = 0usize;
    while !rest.is_empty() {
        let count = rest.len().min(IOV_MAX);
        let at = libc::off_t::try_from(offset + total as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: IoSliceMut is ABI compatible with iovec on Unix; every entry points into
        // a distinct `&mut` slice of `bufs`, borrowed exclusively for this call.
        let n = unsafe {
            libc::preadv(
                file.as_raw_fd(),
                rest.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                at,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        total += n as usize;
        IoSliceMut::advance_slices(&mut rest, n as usize);
    }
    Ok(total)
}

/// Writes back the file's dirty pages and drops all its pages from the page cache, so
/// the next read comes from the device (for cold-read measurements).
pub fn drop_file_cache(file: &File) -> io::Result<()> {
    file.sync_data()?;
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Tells the kernel the file is about to be read from start to end (a larger readahead
/// window). Only a hint: a refusal changes nothing but speed, so it is not reported.
pub fn advise_sequential(file: &File) {
    // SAFETY: plain syscall on a valid descriptor; no memory is passed.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// [`drop_file_cache`] for a path.
pub fn drop_path_cache(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    drop_file_cache(&file)
}

/// Starts writeback of `len` bytes at `offset` without waiting for it, so the device
/// works on data already written while the caller copies the next; a later fsync then
/// finds little left to do. Failure only loses that head start (the fsync still writes).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on a valid descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// fsync of a directory, so that created, renamed and deleted entries are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes an exclusive advisory lock without waiting; `Ok(false)` when another open file
/// holds it.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The filesystem magic of the filesystem holding `path` (`statfs.f_type`).
pub fn fs_magic(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value to be overwritten.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stats` is a valid, writable statfs.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stats) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is a signed word whose width differs between targets; magics are 32-bit.
    Ok((stats.f_type as u64) & 0xFFFF_FFFF)
}

/// This machine's host name, or "host" when it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_full_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// A [`ReadAt`] over a file opened with O_DIRECT: every read goes through an aligned
/// buffer.
pub struct DirectReader<'a>(pub &'a File);

impl ReadAt for DirectReader<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        with_scratch(|scratch| {
            let bytes = read_aligned(self.0, scratch, offset, buf.len())?;
            buf[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        })
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_write_and_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = open_file(&dir.path().join("f"), true, false).unwrap();
        let a = vec![1u8; 100];
        let b = vec![2u8; 5000];
        write_all_vectored_at(&file, &[&a, &[], &b], 10).unwrap();
        let mut x = vec![0u8; 100];
        let mut y = vec![0u8; 6000];
        let n = read_vectored_at(&file, &mut [&mut x, &mut y], 10).unwrap();
        assert_eq!(n, 5100, "a short read at the end of the file");
        assert_eq!(x, a);
        assert_eq!(&y[..5000], &b[..]);
    }

    #[test]
    fn more_buffers_than_one_call_takes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = open_file(&dir.path().join("f"), true, false).unwrap();
        let pieces: Vec<Vec<u8>> = (0..IOV_MAX * 2 + 7)
            .map(|n| vec![(n % 251) as u8; 1 + n % 13])
            .collect();
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        write_all_vectored_at(&file, &refs, 3).unwrap();
        let mut back: Vec<Vec<u8>> = pieces.iter().map(|p| vec![0u8; p.len()]).collect();
        let total: usize = pieces.iter().map(Vec::len).sum();
        let mut outs: Vec<&mut [u8]> = back.iter_mut().map(Vec::as_mut_slice).collect();
        assert_eq!(read_vectored_at(&file, &mut outs, 3).unwrap(), total);
        assert_eq!(back, pieces);
    }

    #[test]
    fn aligned_buffers_are_page_aligned() {
        let mut buf = AlignedBuf::default();
        for len in [1, 4096, 100_000] {
            let slice = buf.get(len, true);
            assert_eq!(slice.as_ptr() as usize % PAGE as usize, 0);
            assert_eq!(slice.len(), len);
            assert!(slice.iter().all(|&b| b == 0));
            slice.fill(9);
        }
    }
}
