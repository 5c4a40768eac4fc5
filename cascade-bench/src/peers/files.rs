//! The one-file-per-block layout (what LMCache's disk backend and many engines do): each
//! block its own file, in the same folder as the file tier.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use cascade::{Error, Result};
use rayon::prelude::*;

use crate::bench::{Bench, RwFigures};
use crate::dataset::Dataset;
use crate::setup;
use crate::stats::{Samples, gbps};

/// Goal: the file tier's cold read over one file per block's.
pub const FILES_GOAL: f64 = 1.5;

/// Measures the layout once per run (after one untimed warm-up) and keeps the figures
/// for every table that compares with it.
pub fn baseline(bench: &mut Bench, ds: &mut Dataset) -> std::result::Result<RwFigures, String> {
    if let Some(done) = &bench.files_baseline {
        return done.clone();
    }
    let measured = measure(bench, ds).map_err(|e| e.to_string());
    bench.files_baseline = Some(measured.clone());
    measured
}

fn measure(bench: &Bench, ds: &mut Dataset) -> Result<RwFigures> {
    let pool = bench.pools.get(bench.args.threads)?;
    let bytes = ds.total_bytes();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    let bar = bench.progress.bar("files", bench.repeat() as u64 + 1);
    for rep in 0..=bench.repeat() {
        // A fresh folder per repetition, all deleted at the end of the run: this ext4
        // makes a create slow for tens of seconds after thousands of deletes.
        let dir = bench.run_dir.fresh("files")?;
        let (write, read) = write_then_read(&pool, ds, &dir, || {})?;
        if rep > 0 {
            writes.push(gbps(bytes, write));
            reads.push(gbps(bytes, read));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(RwFigures {
        write: Samples::new(writes),
        read: Samples::new(reads),
    })
}

/// One repetition in `dir`: writes every block's file, drops their pages from the page
/// cache, reads them back cold and checks the bytes. `settle` runs, untimed, before each
/// timed phase. Returns (write time, read time).
pub fn write_then_read(
    pool: &rayon::ThreadPool,
    ds: &mut Dataset,
    dir: &Path,
    settle: impl Fn(),
) -> Result<(Duration, Duration)> {
    ds.reset_read_back();
    settle();
    let write = pool.install(|| write_files(ds, dir))?;
    setup::drop_page_cache(dir)?;
    settle();
    let read = pool.install(|| read_files(ds, dir))?;
    ds.verify("one file per block")?;
    Ok((write, read))
}

/// Creates one file per block and writes it, then makes them durable with one `syncfs`
/// (the file tier's figure includes its flush too). Runs on the current rayon pool
/// (call it inside `pool.install`).
pub fn write_files(ds: &Dataset, dir: &Path) -> Result<Duration> {
    let start = Instant::now();
    ds.ids().par_iter().enumerate().try_for_each(|(i, id)| {
        let path = dir.join(id.to_hex());
        File::create(&path)
            .and_then(|mut f| f.write_all(ds.block(i)))
            .map_err(|e| {
                Error::io("one-file-per-block write failed", e).with_context("path", path.display())
            })
    })?;
    let folder = File::open(dir).map_err(|e| Error::io("cannot open the folder to sync it", e))?;
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
        return Err(Error::io("syncfs failed", std::io::Error::last_os_error()));
    }
    Ok(start.elapsed())
}

/// Opens and reads every block's file into its place in the read-back buffer, on the
/// current rayon pool.
pub fn read_files(ds: &mut Dataset, dir: &Path) -> Result<Duration> {
    let targets = ds.targets();
    let start = Instant::now();
    targets.into_par_iter().try_for_each(|(id, out)| {
        let path = dir.join(id.to_hex());
        File::open(&path)
            .and_then(|mut f| f.read_exact(out))
            .map_err(|e| {
                Error::io("one-file-per-block read failed", e).with_context("path", path.display())
            })
    })?;
    Ok(start.elapsed())
}
