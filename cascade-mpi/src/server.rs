//! The progress thread: serves other ranks' requests (owner lookups, claims, fetches)
//! with two-sided messages while the rank's own threads use the store.
//!
//! Why two-sided messages and not one-sided windows over the shm pools: Open MPI 4.1's
//! one-sided component (osc rdma) does not run over its TCP transport, a block's place in
//! a pool moves with evictions (a window read would need the holder's cooperation anyway),
//! and MPI's RMA locks are per process, so threads of one rank would serialize on one
//! epoch. A holder answering a fetch reads the blocks in steps into a small ring of
//! buffers and hands each step to MPI before reading the next; the reader receives each
//! block straight into the caller's buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::{BlockId, CascadeStore, Result};

use crate::comm::{Comm, Sends};
use crate::directory::Directory;
use crate::wire::{self, FetchState, Op, Reader, Writer};

/// The tag of every request on the request communicator.
pub(crate) const REQUEST_TAG: i32 = 1;

/// Polls in a row without a request before the thread starts sleeping between polls.
const HOT_POLLS: u32 = 200;
/// The sleep between polls of an idle progress thread: the latency a request to an idle
/// rank pays at most, against a core left free for the rank's own work.
const IDLE_SLEEP: Duration = Duration::from_micros(50);

/// State the client side and the progress thread share.
pub(crate) struct Shared {
    /// This rank's local store.
    pub store: Arc<CascadeStore>,
    /// The blocks this rank owns.
    pub directory: Directory,
    /// Requests to progress threads travel here.
    pub requests: Comm,
    /// Replies travel here, each on the tag its request named.
    pub replies: Comm,
    /// Counters of the cluster-level work.
    pub counters: Counters,
}

/// Cluster-level counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub remote_hits: AtomicU64,
    pub remote_misses: AtomicU64,
    pub remote_bytes: AtomicU64,
    pub dedup_hits: AtomicU64,
    pub dedup_bytes_saved: AtomicU64,
    pub transfer_failures: AtomicU64,
    pub blocks_served: AtomicU64,
    pub bytes_served: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Shared {
    pub(crate) fn rank(&self) -> u32 {
        self.requests.rank() as u32
    }
}

/// Runs until this rank's own `Stop` arrives.
pub(crate) fn serve(shared: Arc<Shared>) {
    let mut scratch = Scratch::default();
    let mut idle: u32 = 0;
    loop {
        let matched = match shared.requests.probe_any(REQUEST_TAG) {
            Ok(Some(matched)) => matched,
            Ok(None) => {
                idle = idle.saturating_add(1);
                if idle < HOT_POLLS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(IDLE_SLEEP);
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster progress thread: probe failed");
                std::thread::sleep(IDLE_SLEEP);
                continue;
            }
        };
        idle = 0;
        let source = matched.source;
        let message = match shared.requests.receive(matched) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, source, "cluster progress thread: receive failed");
                continue;
            }
        };
        if serve_one(&shared, source, &message, &mut scratch) == Flow::Stop {
            break;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

fn serve_one(shared: &Shared, source: i32, message: &[u8], scratch: &mut Scratch) -> Flow {
    let mut reader = Reader::new(message);
    let (op, tag, items) = match reader.request() {
        Ok(header) => header,
        Err(e) => {
            tracing::warn!(error = %e, source, "dropping a request that cannot be answered");
            return Flow::Continue;
        }
    };
    if op == Op::Stop {
        if source == shared.requests.rank() {
            return Flow::Stop;
        }
        tracing::warn!(source, "ignoring a stop request from another rank");
        return Flow::Continue;
    }
    let sent = if op == Op::Fetch {
        serve_fetch(shared, source, tag, &mut reader, items, scratch)
    } else {
        let reply = handle(shared, source as u32, op, &mut reader, items)
            .unwrap_or_else(|e| wire::error_reply(&e));
        shared.replies.send(&reply, source, tag)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, source, ?op, "cluster progress thread: reply failed");
    }
    Flow::Continue
}

/// Answers every request but a fetch; the client calls it directly for its own rank.
pub(crate) fn handle(
    shared: &Shared,
    source: u32,
    op: Op,
    reader: &mut Reader<'_>,
    items: usize,
) -> Result<Vec<u8>> {
    let mut reply = Writer::reply();
    match op {
        Op::Claim => {
            let items = reader.items(items, 24)?;
            for _ in 0..items {
                let id = reader.id()?;
                let len = reader.u64()?;
                reply.u8(u8::from(!shared.directory.claim(id, len, source)));
            }
        }
        Op::Register => {
            for _ in 0..reader.items(items, 24)? {
                let id = reader.id()?;
                let len = reader.u64()?;
                shared.directory.register(id, len, source);
            }
        }
        Op::Unregister => {
            for _ in 0..reader.items(items, 20)? {
                let id = reader.id()?;
                let holder = reader.u32()?;
                shared.directory.unregister(id, holder);
            }
        }
        Op::Locate => {
            for _ in 0..reader.items(items, 16)? {
                match shared.directory.locate(reader.id()?) {
                    Some((len, holders)) => {
                        reply.u64(len);
                        let shown = holders.len().min(usize::from(u16::MAX));
                        reply.u16(shown as u16);
                        for holder in &holders[..shown] {
                            reply.u32(*holder);
                        }
                    }
                    None => {
                        reply.u64(0);
                        reply.u16(0);
                    }
                }
            }
        }
        Op::Remove => {
            for _ in 0..reader.items(items, 16)? {
                let id = reader.id()?;
                let removed = shared.store.remove(id).unwrap_or_else(|e| {
                    tracing::warn!(%id, error = %e, "remove asked by another rank failed");
                    false
                });
                reply.u8(u8::from(removed));
            }
        }
        Op::Fetch | Op::Stop => {
            return Err(wire::malformed(format!("{op:?} is not answered here")));
        }
    }
    Ok(reply.finish())
}

/// Blocks read from the store per step of a fetch: each step's blocks are handed to MPI
/// before the next step reads, so the holder's copy out of its tiers overlaps the
/// transfer of the blocks before.
const FETCH_STEP: usize = 8;
/// Step buffers in the ring: steps whose sends may be in flight at once.
const RING: usize = 4;

/// The progress thread's step buffers, used in turn and kept between requests: small
/// enough to stay in cache, and never left untouched long enough for this kind of VM to
/// take their pages back.
#[derive(Default)]
pub(crate) struct Scratch {
    buffers: [Vec<u8>; RING],
}

/// Answers a fetch: one message per requested block, in order (its bytes, or an empty
/// message when it is absent, failed to read, or no longer has the length the requester
/// expects), then a trailer with each block's state and checksum.
fn serve_fetch(
    shared: &Shared,
    source: i32,
    tag: i32,
    reader: &mut Reader<'_>,
    items: usize,
    scratch: &mut Scratch,
) -> Result<()> {
    let parsed: Result<Vec<(BlockId, usize)>> = reader.items(items, 24).and_then(|n| {
        (0..n)
            .map(|_| {
                Ok((
                    reader.id()?,
                    usize::try_from(reader.u64()?).unwrap_or(usize::MAX),
                ))
            })
            .collect()
    });
    let wanted = match parsed {
        Ok(wanted) => wanted,
        Err(e) => {
            tracing::warn!(error = %e, source, "malformed fetch request");
            return shared.replies.send(&wire::error_reply(&e), source, tag);
        }
    };
    let mut trailer = Writer::reply();
    // The sends of the step that last used each buffer: waited for before it is reused.
    let mut in_flight: [Sends; RING] = Default::default();
    let mut served = (0u64, 0u64);
    for (k, step) in wanted.chunks(FETCH_STEP).enumerate() {
        let slot = k % RING;
        in_flight[slot].wait()?;
        let buffer = &mut scratch.buffers[slot];
        let readable = |len: usize| len <= MAX_BLOCK_BYTES;
        let step_bytes: usize = step
            .iter()
            .map(|(_, len)| *len)
            .filter(|l| readable(*l))
            .sum();
        if buffer.len() < step_bytes {
            buffer.resize(step_bytes, 0);
        }
        let mut outs: Vec<(BlockId, &mut [u8])> = Vec::with_capacity(step.len());
        let mut rest = &mut buffer[..step_bytes];
        for (id, len) in step {
            let len = if readable(*len) { *len } else { 0 };
            let (head, tail) = rest.split_at_mut(len);
            outs.push((*id, head));
            rest = tail;
        }
        let results = shared.store.get_batch(&mut outs);
        for (((id, out), (_, expected)), result) in outs.into_iter().zip(step).zip(results) {
            let (state, bytes): (FetchState, &[u8]) = match result {
                Ok(Some(n)) if n == *expected => (FetchState::Found, out),
                Ok(Some(_)) => (FetchState::Failed, &[]),
                Ok(None) => (FetchState::Absent, &[]),
                Err(e) => {
                    tracing::warn!(%id, error = %e, source, "a block asked by another rank failed to read");
                    (FetchState::Failed, &[])
                }
            };
            trailer.u8(state as u8);
            trailer.u64(if state == FetchState::Found {
                crate::checksum(bytes)
            } else {
                0
            });
            if state == FetchState::Found {
                served.0 += 1;
                served.1 += bytes.len() as u64;
            }
            // SAFETY: `bytes` lies in `scratch.buffers[slot]` (or is empty), which is not
            // touched again until `in_flight[slot]` is waited for: when the ring comes
            // round to this buffer again, or below, before this function returns.
            unsafe {
                shared
                    .replies
                    .isend(&mut in_flight[slot], bytes, source, tag)?
            };
        }
    }
    let sent = shared.replies.send(&trailer.finish(), source, tag);
    let waited = in_flight.iter_mut().try_for_each(Sends::wait);
    bump(&shared.counters.blocks_served, served.0);
    bump(&shared.counters.bytes_served, served.1);
    sent.and(waited)
}

/// The most bytes one fetch asks of a holder (the client splits larger batches).
pub(crate) const MAX_FETCH_BYTES: usize = 1 << 30;
/// The largest block a holder sends (an MPI message is limited to 2 GiB - 1 bytes).
const MAX_BLOCK_BYTES: usize = i32::MAX as usize;
