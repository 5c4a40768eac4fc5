//! The file tier's batch lend ([`cascade_core::Tier::get_with_batch`]), which the store
//! uses to read a batch straight into device memory.
//!
//! The records have no host memory of their own to lend, so they are read into buffers
//! the tier keeps between calls, in chunks that follow the order of the records on disk:
//! each chunk is read with the planned parallel runs of `get_batch` on the I/O threads
//! while the caller's visit copies the previous chunk out. Kept buffers matter as much as
//! the overlap: the pages of a fresh buffer of tens of MiB are faulted in and zeroed by
//! the read itself, which costs about as much as reading them from a fast disk.

use std::sync::Arc;
use std::sync::mpsc;

use cascade_core::tier::{BatchVisit, apply_visits};
use cascade_core::{BlockId, Error, ErrorKind, Result};
use parking_lot::Mutex;

use crate::store::{Entry, Inner, MAX_READ_RUN};

/// Buffers kept between lends: one call's pair (one chunk read while one is visited).
const KEPT_BUFFERS: usize = 2;
/// Runs a chunk is read with at most, so a chunk stays small enough to keep but spans
/// several I/O threads.
const RUNS_PER_CHUNK: u64 = 4;

/// The buffers lends read into, kept for the next call.
#[derive(Default)]
pub struct LendBuffers {
    kept: Mutex<Vec<Vec<u8>>>,
}

impl LendBuffers {
    /// A buffer of at least `len` bytes (a kept one when it is large enough).
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = {
            let mut kept = self.kept.lock();
            kept.iter()
                .position(|b| b.len() >= len)
                .map(|at| kept.swap_remove(at))
        };
        reused.unwrap_or_else(|| vec![0u8; len])
    }

    /// Keeps `buffer` for a later lend when it is no larger than `limit` (one chunk: a
    /// record larger than a chunk does not pin its buffer): the largest buffers are
    /// kept, so one small lend does not make every later large one allocate again.
    fn give_back(&self, buffer: Vec<u8>, limit: usize) {
        if buffer.len() > limit {
            return;
        }
        let mut kept = self.kept.lock();
        if kept.len() < KEPT_BUFFERS {
            kept.push(buffer);
        } else if let Some(smallest) = kept.iter_mut().min_by_key(|b| b.len()) {
            if smallest.len() < buffer.len() {
                *smallest = buffer;
            }
        }
    }
}

/// The records of one chunk: (position in the batch, where the record lives).
type Chunk = Vec<(usize, Entry)>;

/// A chunk read into its buffer: the records, the buffer, and each record's outcome in
/// the chunk's order (its length, or why it could not be read).
struct ReadChunk {
    records: Chunk,
    buffer: Vec<u8>,
    outcomes: Vec<Result<usize>>,
}

/// Bytes read per chunk: one buffered run (the longest) per I/O thread, for up to
/// `RUNS_PER_CHUNK` threads.
pub fn chunk_bytes(io_threads: usize) -> u64 {
    MAX_READ_RUN * RUNS_PER_CHUNK.min(io_threads.max(1) as u64)
}

/// Cuts `found` (sorted in disk order) into chunks of about `limit` bytes each; a record
/// larger than `limit` is a chunk of its own.
fn chunks(found: Vec<(usize, Entry)>, limit: u64) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut bytes = 0u64;
    for (position, entry) in found {
        let len = entry.record.len;
        match chunks.last_mut() {
            Some(chunk) if bytes + len <= limit => {
                chunk.push((position, entry));
                bytes += len;
            }
            _ => {
                chunks.push(vec![(position, entry)]);
                bytes = len;
            }
        }
    }
    chunks
}

impl Inner {
    /// Lends the blocks `ids` to `visit`, chunk by chunk; see the module documentation.
    pub fn lend_batch(
        &self,
        buffers: &LendBuffers,
        ids: &[BlockId],
        visit: &mut BatchVisit<'_>,
    ) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(ids.len());
        let mut found: Vec<(usize, Entry)> = Vec::with_capacity(ids.len());
        for (position, id) in ids.iter().enumerate() {
            match self.index.with(id, Entry::clone) {
                Some(entry) => {
                    found.push((position, entry));
                    results.push(Ok(()));
                }
                None => results.push(Err(Error::not_found(*id))),
            }
        }
        found.sort_by_key(|(_, e)| (Arc::as_ptr(&e.segment) as usize, e.record.offset));
        let limit = chunk_bytes(self.io_pool.current_num_threads());
        let mut pending = chunks(found, limit);
        pending.reverse();
        let Some(first) = pending.pop() else {
            return results;
        };
        let read = |records: Chunk, buffer: Vec<u8>| self.read_chunk(records, buffer);
        let first_buffer = buffers.take(chunk_len(&first));
        let mut current = read(first, first_buffer);
        // The next chunk is read on the I/O threads while this thread visits the current
        // one; the visit stays here, as it need not be Send (it drives the caller's DMA).
        self.io_pool.in_place_scope(|scope| {
            loop {
                let next = pending.pop().map(|records| {
                    let (sender, receiver) = mpsc::sync_channel(1);
                    let buffer = buffers.take(chunk_len(&records));
                    scope.spawn(move |_| {
                        // The receiver outlives the scope's tasks; a send cannot fail.
                        let _ = sender.send(read(records, buffer));
                    });
                    receiver
                });
                lend_chunk(&current, visit, &mut results);
                buffers.give_back(std::mem::take(&mut current.buffer), limit as usize);
                let Some(receiver) = next else {
                    break;
                };
                // No answer only when the reading task panicked; the scope then raises
                // that panic as it ends.
                let Ok(chunk) = receiver.recv() else {
                    break;
                };
                current = chunk;
            }
        });
        results
    }

    /// Reads `records` into `buffer`, each at its offset in the chunk.
    fn read_chunk(&self, records: Chunk, mut buffer: Vec<u8>) -> ReadChunk {
        let mut outcomes: Vec<Result<usize>> = Vec::with_capacity(records.len());
        {
            let mut rest: &mut [u8] = &mut buffer;
            let mut found = Vec::with_capacity(records.len());
            for (k, (_, entry)) in records.iter().enumerate() {
                let (mine, tail) = rest.split_at_mut(entry.record.len as usize);
                rest = tail;
                found.push((k, entry.clone(), mine));
                outcomes.push(Err(Error::new(ErrorKind::Io, "read was not attempted")));
            }
            for (k, outcome) in self.read_found(found) {
                outcomes[k] = outcome;
            }
        }
        ReadChunk {
            records,
            buffer,
            outcomes,
        }
    }
}

/// Bytes a chunk's records take in its buffer.
fn chunk_len(records: &Chunk) -> usize {
    records.iter().map(|(_, e)| e.record.len as usize).sum()
}

/// Lends the records of `chunk` that were read to `visit`; the others get their read
/// error.
fn lend_chunk(chunk: &ReadChunk, visit: &mut BatchVisit<'_>, results: &mut [Result<()>]) {
    let mut lent: Vec<(usize, &[u8])> = Vec::with_capacity(chunk.records.len());
    let mut at = 0usize;
    for ((position, entry), outcome) in chunk.records.iter().zip(&chunk.outcomes) {
        let len = entry.record.len as usize;
        match outcome {
            Ok(got) => lent.push((*position, &chunk.buffer[at..at + (*got).min(len)])),
            Err(e) => results[*position] = Err(e.clone()),
        }
        at += len;
    }
    if lent.is_empty() {
        return;
    }
    // apply_visits indexes results by position in the batch, as lent does.
    apply_visits(visit, &lent, results);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_lens(buffers: &LendBuffers) -> Vec<usize> {
        let mut lens: Vec<usize> = buffers.kept.lock().iter().map(Vec::len).collect();
        lens.sort_unstable();
        lens
    }

    #[test]
    fn the_largest_buffers_up_to_a_chunk_are_kept() {
        let buffers = LendBuffers::default();
        buffers.give_back(vec![0; 10], 100);
        buffers.give_back(vec![0; 50], 100);
        assert_eq!(kept_lens(&buffers), [10, 50]);
        // A third replaces the smallest only when larger.
        buffers.give_back(vec![0; 5], 100);
        assert_eq!(kept_lens(&buffers), [10, 50]);
        buffers.give_back(vec![0; 80], 100);
        assert_eq!(kept_lens(&buffers), [50, 80]);
        // Larger than a chunk: never kept.
        buffers.give_back(vec![0; 101], 100);
        assert_eq!(kept_lens(&buffers), [50, 80]);
    }

    #[test]
    fn a_kept_buffer_serves_any_request_it_covers() {
        let buffers = LendBuffers::default();
        buffers.give_back(vec![7; 64], 100);
        let reused = buffers.take(40);
        assert_eq!(reused.len(), 64, "the kept buffer, not a new one");
        assert!(kept_lens(&buffers).is_empty());
        let fresh = buffers.take(90);
        assert_eq!(fresh.len(), 90);
    }
}
