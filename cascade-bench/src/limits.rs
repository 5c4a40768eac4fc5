//! Hardware limits measured in the same run, against which every tier's efficiency is
//! computed: memcpy with the same threads (memory and shm tiers), sequential O_DIRECT and
//! buffered write and read of one file of the same total size (file tier: the faster of
//! the two per direction; the `file` section shows both, see [`crate::cold_read`]), and
//! a pinned copy for the GPU where the GPU crate offers one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use cascade::{Error, Result};
use rayon::prelude::*;

use crate::dataset::Dataset;

/// Bytes per O_DIRECT request of the file limit: large enough that the disk, not the
/// system call rate, is what is measured.
pub const DIRECT_CHUNK: usize = 4 << 20;

/// Bytes per `write` and `read` of the buffered sequential file: what `dd bs=4M` uses,
/// large enough that the kernel's readahead, not the call rate, sets the pace.
pub const BUFFERED_CHUNK: usize = 4 << 20;

/// How the file limit reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectMode {
    /// O_DIRECT: no page cache involved.
    Direct,
    /// The file system refused O_DIRECT (tmpfs, some overlays): buffered I/O with a sync
    /// and a page-cache drop before the read.
    Buffered,
}

/// Writes the data set's bytes to one new file in `dir` with O_DIRECT, `DIRECT_CHUNK`
/// requests interleaved over `pool`'s threads in file order, then syncs; then reads it
/// back the same way. Returns (write time, read time, mode).
pub fn direct_file(
    pool: &rayon::ThreadPool,
    ds: &mut Dataset,
    dir: &Path,
) -> Result<(Duration, Duration, DirectMode)> {
    let path = dir.join("limit.bin");
    let (file, mode) = open_direct(&path, true)?;
    let len = ds.source().aligned().len();
    let start = Instant::now();
    pool.install(|| {
        ds.source()
            .aligned()
            .par_chunks(DIRECT_CHUNK)
            .enumerate()
            .try_for_each(|(i, chunk)| file.write_all_at(chunk, (i * DIRECT_CHUNK) as u64))
    })
    .map_err(|e| {
        Error::io("O_DIRECT write of the limit file failed", e).with_context("path", path.display())
    })?;
    file.sync_all().map_err(|e| {
        Error::io("sync of the limit file failed", e).with_context("path", path.display())
    })?;
    let write = start.elapsed();
    drop(file);
    if mode == DirectMode::Buffered {
        crate::setup::drop_file_cache(&path)?;
    }
    ds.reset_read_back();
    let (file, _) = open_direct(&path, false)?;
    let (_, dst) = ds.buffers_mut();
    let target = &mut dst.aligned_mut()[..len];
    let start = Instant::now();
    pool.install(|| {
        target
            .par_chunks_mut(DIRECT_CHUNK)
            .enumerate()
            .try_for_each(|(i, chunk)| file.read_exact_at(chunk, (i * DIRECT_CHUNK) as u64))
    })
    .map_err(|e| {
        Error::io("O_DIRECT read of the limit file failed", e).with_context("path", path.display())
    })?;
    let read = start.elapsed();
    drop(file);
    ds.verify("O_DIRECT limit file")?;
    let _ = std::fs::remove_file(&path);
    Ok((write, read, mode))
}

/// Writes the data set's bytes to one new file in `dir` with `BUFFERED_CHUNK` writes on
/// the calling thread and fsyncs it (the write time includes the fsync); drops its page
/// cache; syncs every file system; then reads it start to end with `BUFFERED_CHUNK` reads
/// on the calling thread, as `dd` or `cat` would, leaving readahead to the kernel.
/// Returns (write time, cold read time).
pub fn buffered_file(ds: &mut Dataset, dir: &Path) -> Result<(Duration, Duration)> {
    let path = dir.join("sequential.bin");
    let io_err = |what: &'static str| {
        let path = path.display().to_string();
        move |e: std::io::Error| Error::io(what, e).with_context("path", path)
    };
    let start = Instant::now();
    let mut file = File::create(&path).map_err(io_err("cannot create the sequential file"))?;
    ds.source()
        .as_slice()
        .chunks(BUFFERED_CHUNK)
        .try_for_each(|chunk| file.write_all(chunk))
        .map_err(io_err("write of the sequential file failed"))?;
    file.sync_all()
        .map_err(io_err("sync of the sequential file failed"))?;
    let write = start.elapsed();
    drop(file);
    crate::setup::drop_file_cache(&path)?;
    crate::setup::sync_everything();
    ds.reset_read_back();
    let (_, dst) = ds.buffers_mut();
    let start = Instant::now();
    let mut file = File::open(&path).map_err(io_err("cannot open the sequential file"))?;
    dst.as_mut_slice()
        .chunks_mut(BUFFERED_CHUNK)
        .try_for_each(|chunk| file.read_exact(chunk))
        .map_err(io_err("read of the sequential file failed"))?;
    let read = start.elapsed();
    drop(file);
    ds.verify("sequential file")?;
    let _ = std::fs::remove_file(&path);
    Ok((write, read))
}

fn open_direct(path: &Path, create: bool) -> Result<(File, DirectMode)> {
    let open = |flags: i32| {
        let mut options = OpenOptions::new();
        if create {
            options.write(true).create(true).truncate(true);
        } else {
            options.read(true);
        }
        options.custom_flags(flags).open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(file) => Ok((file, DirectMode::Direct)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            open(0).map(|f| (f, DirectMode::Buffered)).map_err(|e| {
                Error::io("cannot open the limit file", e).with_context("path", path.display())
            })
        }
        Err(e) => Err(Error::io("cannot open the limit file with O_DIRECT", e)
            .with_context("path", path.display())),
    }
}
