//! Large demotions split over a few threads.
//!
//! The copy of a batch is fast (one batched DMA out of device memory, or memcpy); what
//! the tier below does per block around it (checksum, slot record, index entry) is CPU
//! work that one thread would do for the whole batch while the link idles: on an H200
//! host a GPU -> shm demotion of 1 GiB went from 4.9 GB/s on one thread to 19.5 GB/s on
//! eight (docs/benchmarks.md). A batch of many megabytes is cut into consecutive chunks,
//! each moved by its own batch call on its own thread. The threads are scoped OS
//! threads, not the rayon pool: the caller holds the blocks' stripe locks, and a rayon
//! worker waiting here could pick up a job that waits for them. (Promotions stay on one
//! thread: lending and putting in chunks at once measured slower.)

use crate::{Error, ErrorKind, Result};

/// Bytes each thread takes at least.
const CHUNK_BYTES: u64 = 8 << 20;
/// Threads one move uses at most.
const MAX_THREADS: usize = 8;

/// Runs `run` over consecutive chunks of `items` (whose sizes `len` gives) on up to
/// [`MAX_THREADS`] threads, one chunk each, and returns the results in the items'
/// order. Small batches run on the calling thread in one call.
pub(super) fn in_chunks<T: Sync, R: Send>(
    items: &[T],
    len: impl Fn(&T) -> u64,
    run: impl Fn(&[T]) -> Vec<Result<R>> + Sync,
) -> Vec<Result<R>> {
    let bytes: u64 = items.iter().map(&len).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = usize::try_from(bytes / CHUNK_BYTES)
        .unwrap_or(usize::MAX)
        .min(MAX_THREADS)
        .min(cores)
        .min(items.len())
        .max(1);
    if threads == 1 {
        return run(items);
    }
    let chunks: Vec<&[T]> = items.chunks(items.len().div_ceil(threads)).collect();
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks[1..]
            .iter()
            .map(|chunk| scope.spawn(move || run(chunk)))
            .collect();
        let mut results = run(chunks[0]);
        for (handle, chunk) in handles.into_iter().zip(&chunks[1..]) {
            results.extend(handle.join().unwrap_or_else(|_| {
                chunk
                    .iter()
                    .map(|_| Err(Error::new(ErrorKind::Io, "a thread moving blocks panicked")))
                    .collect()
            }));
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_whatever_the_split() {
        for (count, size) in [(0usize, 1u64), (3, 1), (64, 1 << 20), (100, 3 << 20)] {
            let items: Vec<usize> = (0..count).collect();
            let results = in_chunks(
                &items,
                |_| size,
                |chunk| chunk.iter().map(|&i| Ok(i * 2)).collect(),
            );
            let values: Vec<usize> = results.into_iter().map(|r| r.expect("ok")).collect();
            assert_eq!(values, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_panicking_chunk_fails_its_items_only() {
        let items: Vec<usize> = (0..64).collect();
        let results = in_chunks(
            &items,
            |_| 1 << 20,
            |chunk| {
                if chunk.contains(&63) && chunk[0] != 0 {
                    panic!("test panic in a move thread");
                }
                chunk.iter().map(|&i| Ok(i)).collect()
            },
        );
        assert_eq!(results.len(), 64);
        assert!(results[0].is_ok());
        if std::thread::available_parallelism().map_or(1, usize::from) > 1 {
            assert!(results[63].is_err());
        }
    }
}
