//! Where the batched C++ write loses its last few percent against cascade-bench: batches
//! of 64 blocks of 128 KiB put from two threads, in three shapes on one store,
//! alternating round by round (medians of the timed rounds, each including the flush):
//!
//! - `rayon workers`: cascade-bench's shape, the batches spread over a 2-thread rayon
//!   pool whose workers run them (and steal the next one at once);
//! - `std threads, Rust API`: two plain threads (as OpenMP's are) each calling
//!   `CascadeStore::put_batch`, which hands its parallel steps to rayon's workers;
//! - `std threads, C ABI`: the same through `cascade_put_batch`, as examples/cpp does.
//!
//! ```text
//! cargo run --release -p cascade-c --example batch_handoff -- [deployment.toml] [rounds]
//! ```
//!
//! Without a deployment the store is one shm tier in a pool file of this run in /dev/shm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cascade::{BlockId, Cascade};
use cascade_c::store::CascadeHandle;
use cascade_c::{CascadeBlockId, CascadeStatus, cascade_put_batch};
use rayon::prelude::*;

const BLOCKS: usize = 1024;
const SIZE: usize = 128 << 10;
const BATCH: usize = 64;
const THREADS: usize = 2;

type Outcome = Result<(), String>;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batch_handoff: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Outcome {
    let mut args = std::env::args().skip(1);
    let config = args.next();
    let rounds: usize = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("rounds: {e}"))?,
        None => 11,
    };
    let pool_file = std::path::PathBuf::from(format!(
        "/dev/shm/cascade-handoff-{}.pool",
        std::process::id()
    ));
    let store = match &config {
        Some(path) => Cascade::open_toml_file(path),
        None => Cascade::open_toml_str(&format!(
            "num_io_threads = 0\npromote_on_read = false\n[[tiers]]\nkind = \"shm\"\npath = \"{}\"\ncapacity = \"{} MiB\"\n",
            pool_file.display(),
            BLOCKS * SIZE * 9 / 8 / (1 << 20) + 64
        )),
    }
    .map_err(|e| format!("cannot open the store: {e}"))?;
    let outcome = measure(CascadeHandle::from_store(store), rounds);
    let _ = std::fs::remove_file(&pool_file);
    outcome
}

fn measure(handle: CascadeHandle, rounds: usize) -> Outcome {
    // Page-aligned source bytes, distinct per block, touched before any timing.
    let mut src = memmap2::MmapMut::map_anon(BLOCKS * SIZE).map_err(|e| e.to_string())?;
    for (i, b) in src.iter_mut().enumerate() {
        *b = ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    for i in 0..BLOCKS {
        src[i * SIZE..i * SIZE + 8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    let src: &[u8] = &src;
    let block = |i: usize| &src[i * SIZE..(i + 1) * SIZE];
    let ids: Vec<BlockId> = (0..BLOCKS)
        .map(|i| cascade::compute_block_id(block(i)))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .map_err(|e| e.to_string())?;
    let store = handle.store();
    let shapes: [(&str, &dyn Fn() -> Outcome); 3] = [
        ("rayon workers (cascade-bench)", &|| {
            let items: Vec<(BlockId, &[u8])> = (0..BLOCKS).map(|i| (ids[i], block(i))).collect();
            pool.install(|| {
                items
                    .par_chunks(BATCH)
                    .try_for_each(|chunk| all_stored(store.put_batch(chunk)))
            })
        }),
        ("std threads, Rust API", &|| {
            from_threads(|first, last| {
                let items: Vec<(BlockId, &[u8])> =
                    (first..last).map(|i| (ids[i], block(i))).collect();
                all_stored(store.put_batch(&items))
            })
        }),
        ("std threads, C ABI (examples/cpp)", &|| {
            let raw: Vec<CascadeBlockId> = ids.iter().map(|&id| id.into()).collect();
            from_threads(|first, last| {
                let blocks: Vec<*const u8> = (first..last).map(|i| block(i).as_ptr()).collect();
                let lens = vec![SIZE; last - first];
                // SAFETY: the handle outlives the call; ids, blocks and lens hold
                // `last - first` entries, each block SIZE readable bytes.
                let status = unsafe {
                    cascade_put_batch(
                        &handle,
                        raw[first..].as_ptr(),
                        blocks.as_ptr(),
                        lens.as_ptr(),
                        last - first,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                match status {
                    CascadeStatus::Ok => Ok(()),
                    other => Err(format!("cascade_put_batch: {other:?}")),
                }
            })
        }),
    ];
    let mut gbps: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
    for round in 0..=rounds {
        for (shape, figures) in shapes.iter().zip(&mut gbps) {
            let start = Instant::now();
            shape.1()?;
            store.flush().map_err(|e| e.to_string())?;
            let seconds = start.elapsed().as_secs_f64();
            store.clear().map_err(|e| e.to_string())?;
            if round > 0 {
                figures.push((BLOCKS * SIZE) as f64 / seconds / 1e9);
            }
        }
    }
    println!(
        "{BLOCKS} blocks of {} KiB, batches of {BATCH}, {THREADS} threads, median of {rounds} rounds (write GB/s, with the flush):",
        SIZE >> 10
    );
    let baseline = median(&mut gbps[0].clone());
    for ((name, _), figures) in shapes.iter().zip(&mut gbps) {
        let m = median(figures);
        println!(
            "  {name:<36} {m:6.2}  ({:.0}% of rayon workers)",
            100.0 * m / baseline
        );
    }
    Ok(())
}

/// Runs `put(first, last)` over every batch of block positions from THREADS plain threads.
fn from_threads(put: impl Fn(usize, usize) -> Outcome + Sync) -> Outcome {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let first = next.fetch_add(1, Ordering::Relaxed) * BATCH;
                        if first >= BLOCKS {
                            return Ok(());
                        }
                        put(first, (first + BATCH).min(BLOCKS))?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "a thread panicked".to_string())?)
    })
}

fn all_stored(outcomes: Vec<cascade::Result<cascade::PutOutcome>>) -> Outcome {
    outcomes
        .into_iter()
        .try_for_each(|o| o.map(|_| ()).map_err(|e| e.to_string()))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
