//! Timed passes over a data set: batched puts and gets through a store, and the memcpy
//! that bounds them, each on a thread pool of the requested size.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cascade::{BlockId, CascadeStore, Error, ErrorKind, Result};
use rayon::prelude::*;

use crate::dataset::Dataset;

/// Thread pools by size, built once and reused so that no table pays for thread creation.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>>,
}

impl Pools {
    /// The pool of `threads` threads.
    pub fn get(&self, threads: usize) -> Result<Arc<rayon::ThreadPool>> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "thread pool table poisoned"))?;
        if let Some(pool) = pools.get(&threads) {
            return Ok(pool.clone());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bench-{i}"))
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot start {threads} threads: {e}"),
                )
            })?;
        let pool = Arc::new(pool);
        pools.insert(threads, pool.clone());
        Ok(pool)
    }
}

/// Puts every block of `items`, `batch` blocks per `put_batch` call, spread over `pool`.
/// Returns the time taken; any failed put is an error (a benchmark that lost data would
/// report a meaningless figure).
pub fn put_all(
    pool: &rayon::ThreadPool,
    store: &CascadeStore,
    items: &[(BlockId, &[u8])],
    batch: usize,
) -> Result<Duration> {
    let start = Instant::now();
    pool.install(|| {
        items.par_chunks(batch.max(1)).try_for_each(|chunk| {
            store
                .put_batch(chunk)
                .into_iter()
                .try_for_each(|outcome| outcome.map(|_| ()))
        })
    })?;
    Ok(start.elapsed())
}

/// Gets every block of `targets` into its buffer, `batch` per `get_batch` call, spread
/// over `pool`. A block that is missing or shorter than its buffer is an error.
pub fn get_all(
    pool: &rayon::ThreadPool,
    store: &CascadeStore,
    targets: &mut [(BlockId, &mut [u8])],
    batch: usize,
) -> Result<Duration> {
    let start = Instant::now();
    pool.install(|| {
        targets.par_chunks_mut(batch.max(1)).try_for_each(|chunk| {
            let outcomes = store.get_batch(chunk);
            for (outcome, (id, out)) in outcomes.into_iter().zip(chunk.iter()) {
                match outcome? {
                    Some(n) if n == out.len() => {}
                    got => {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            "a block written by the benchmark did not read back whole",
                        )
                        .with_context("id", id)
                        .with_context("got", format!("{got:?}")));
                    }
                }
            }
            Ok(())
        })
    })?;
    Ok(start.elapsed())
}

/// Writes then reads the whole data set through `store` (untimed reset and verify
/// around it). `between` runs after the write and before the read, untimed (a flush
/// and a page-cache drop for the file tier). Returns (write time, read time).
pub fn write_then_read(
    pool: &rayon::ThreadPool,
    store: &CascadeStore,
    ds: &mut Dataset,
    batch: usize,
    between: &mut dyn FnMut() -> Result<()>,
) -> Result<(Duration, Duration)> {
    ds.reset_read_back();
    let write = {
        let items = ds.items();
        let put = put_all(pool, store, &items, batch)?;
        let flush_start = Instant::now();
        store.flush()?;
        put + flush_start.elapsed()
    };
    between()?;
    let read = {
        let mut targets = ds.targets();
        get_all(pool, store, &mut targets, batch)?
    };
    ds.verify("store read-back")?;
    Ok((write, read))
}

/// Copies the whole data set from the source to the read-back buffer, one block per
/// task on `pool`: the memory bandwidth a host tier can reach with that many threads.
pub fn memcpy_all(pool: &rayon::ThreadPool, ds: &mut Dataset) -> Duration {
    let block = ds.block_size();
    let (src, dst) = ds.buffers_mut();
    let start = Instant::now();
    pool.install(|| {
        dst.as_mut_slice()
            .par_chunks_mut(block)
            .zip(src.as_slice().par_chunks(block))
            .for_each(|(d, s)| d.copy_from_slice(s));
    });
    start.elapsed()
}
