//! The progress thread: serves other ranks' requests (owner lookups, claims, fetches)
//! with two-sided messages while the rank's own threads use the store.
//!
//! Why two-sided messages and not one-sided windows over the shm pools: Open MPI 4.1's
//! one-sided component (osc rdma) does not run over its TCP transport, a block's place in
//! a pool moves with evictions (a window read would need the holder's cooperation anyway),
//! and MPI's RMA locks are per process, so threads of one rank would serialize on one
//! epoch. A holder answering a fetch has the store lend it the blocks in steps and hands
//! each block to MPI where it lies (in its shm pool); the reader receives each block
//! straight into the caller's buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::{BlockId, CascadeStore, Result};

use crate::comm::{Comm, Matched, Sends};
use crate::directory::Directory;
use crate::wire::{self, FetchState, Op, Places, Reader, Writer};

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
    pub direct_hits: AtomicU64,
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
        let Some((source, message)) = receive(&shared, matched) else {
            continue;
        };
        if serve_one(&shared, source, &message) == Flow::Stop {
            break;
        }
    }
}

/// Answers one request that is waiting, if any, on the calling thread: a thread of this
/// rank busy copying (direct reads) calls it between blocks, so that requests to this
/// rank are not left waiting until the progress thread next gets the core (with a core
/// per rank, up to a whole batch's copy; ranks that wait on each other that way fall into
/// lockstep at half speed). A stop request is for the progress thread: it is sent on to
/// it again.
pub(crate) fn serve_pending(shared: &Shared) {
    let Ok(Some(matched)) = shared.requests.probe_any(REQUEST_TAG) else {
        return;
    };
    let Some((source, message)) = receive(shared, matched) else {
        return;
    };
    if serve_one(shared, source, &message) == Flow::Stop
        && let Err(e) = shared.requests.send(&message, source, REQUEST_TAG)
    {
        tracing::warn!(error = %e, "could not pass the stop request on to the progress thread");
    }
}

/// Receives a matched request with its sender; `None` (logged) when the receive failed.
fn receive(shared: &Shared, matched: Matched) -> Option<(i32, Vec<u8>)> {
    let source = matched.source;
    match shared.requests.receive(matched) {
        Ok(message) => Some((source, message)),
        Err(e) => {
            tracing::warn!(error = %e, source, "cluster request: receive failed");
            None
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

fn serve_one(shared: &Shared, source: i32, message: &[u8]) -> Flow {
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
        serve_fetch(shared, source, tag, &mut reader, items)
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
        Op::Place => {
            let ids = (0..reader.items(items, 16)?)
                .map(|_| reader.id())
                .collect::<Result<Vec<BlockId>>>()?;
            return Ok(places(&shared.store, &ids).encode());
        }
        Op::Fetch | Op::Stop => {
            return Err(wire::malformed(format!("{op:?} is not answered here")));
        }
    }
    Ok(reply.finish())
}

/// Where each of `ids` lies in this rank's shared pool files, for a reader on this node.
fn places(store: &CascadeStore, ids: &[BlockId]) -> Places {
    let mut answer = Places::default();
    let mut listed: Vec<usize> = Vec::new();
    for place in store.shared_places(ids) {
        let item = place.and_then(|(tier, place)| {
            let wire_tier = u32::try_from(tier).ok()?;
            if !listed.contains(&tier) {
                listed.push(tier);
                if let Some(file) = store.shared_file(tier) {
                    answer.files.push((wire_tier, file));
                }
            }
            Some((wire_tier, place))
        });
        answer.items.push(item);
    }
    answer
}

/// Blocks lent by the store per step of a fetch. A step's blocks stay lent (the shm
/// tier holds their shards' read locks) until their sends complete, so a step bounds how
/// long this rank's writers to those shards may wait; the one block per step whose
/// transfer does not overlap the next one's is the price of a step.
const FETCH_STEP: usize = 16;

/// Answers a fetch: one message per requested block, in order (its bytes, or an empty
/// message when it is absent, failed to read, or no longer has the length the requester
/// expects), then a trailer with each block's state and checksum.
///
/// The blocks are sent from where the store lends them (the shm pool itself), so over
/// shared memory the requester's single copy is the whole transfer. Each block's
/// checksum is the one its tier stored (the shm tier keeps one per block); a block lent
/// without one is hashed while the requester copies it.
fn serve_fetch(
    shared: &Shared,
    source: i32,
    tag: i32,
    reader: &mut Reader<'_>,
    items: usize,
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
    let mut states: Vec<(FetchState, u64)> = Vec::with_capacity(wanted.len());
    for step in wanted.chunks(FETCH_STEP) {
        states.extend(serve_step(shared, source, tag, step)?);
    }
    let mut trailer = Writer::reply();
    let mut served = (0u64, 0u64);
    for ((state, checksum), (_, len)) in states.iter().zip(&wanted) {
        trailer.u8(*state as u8);
        trailer.u64(*checksum);
        if *state == FetchState::Found {
            served.0 += 1;
            served.1 += *len as u64;
        }
    }
    bump(&shared.counters.blocks_served, served.0);
    bump(&shared.counters.bytes_served, served.1);
    shared.replies.send(&trailer.finish(), source, tag)
}

/// Sends one step's blocks in order, each from where the store lends it; returns each
/// block's state and checksum (zero unless found).
fn serve_step(
    shared: &Shared,
    source: i32,
    tag: i32,
    step: &[(BlockId, usize)],
) -> Result<Vec<(FetchState, u64)>> {
    let ids: Vec<BlockId> = step.iter().map(|(id, _)| *id).collect();
    let mut states = vec![(FetchState::Failed, 0u64); step.len()];
    let mut found = vec![false; step.len()];
    // The next position to answer: blocks are answered in order, and one lent after its
    // turn (it moved between tiers while being lent) was answered empty already.
    let mut next = 0usize;
    let mut failure: Option<cascade_core::Error> = None;
    let replies = &shared.replies;
    let outcomes = shared.store.get_with_batch_checked(&ids, &mut |lent| {
        let mut sends = Sends::default();
        let mut sent: Vec<(usize, &[u8], Option<u64>)> = Vec::with_capacity(lent.len());
        let mut posted = Ok(());
        for &(pos, bytes, stored) in lent {
            if pos < next || posted.is_err() {
                continue;
            }
            posted = (next..pos).try_for_each(|_| send_empty(replies, &mut sends, source, tag));
            if posted.is_ok() {
                if bytes.len() == step[pos].1 && bytes.len() <= MAX_BLOCK_BYTES {
                    // SAFETY: a lent block stays lent, unchanged, until this visit
                    // returns, and `sends` is waited for before it does.
                    posted = unsafe { replies.isend(&mut sends, bytes, source, tag) };
                    sent.push((pos, bytes, stored));
                } else {
                    posted = send_empty(replies, &mut sends, source, tag);
                }
            }
            next = pos + 1;
        }
        // The checksum the shm tier stored at write time is the wire's (both XXH3-64):
        // taking it saves the holder a pass over the bytes, and bytes damaged in the
        // pool since then fail the requester's check instead of being hashed anew.
        for &(pos, bytes, stored) in &sent {
            let checksum = stored.unwrap_or_else(|| crate::checksum(bytes));
            states[pos] = (FetchState::Found, checksum);
            found[pos] = true;
        }
        let done = posted.and(sends.wait());
        lent.iter()
            .map(|_| match &done {
                Ok(()) => Ok(()),
                Err(e) => {
                    failure.get_or_insert_with(|| e.clone());
                    Err(e.clone())
                }
            })
            .collect()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let mut sends = Sends::default();
    for _ in next..step.len() {
        send_empty(replies, &mut sends, source, tag)?;
    }
    sends.wait()?;
    for (pos, outcome) in outcomes.into_iter().enumerate() {
        if found[pos] {
            continue;
        }
        states[pos].0 = match outcome {
            Ok(false) => FetchState::Absent,
            Ok(true) => FetchState::Failed,
            Err(e) => {
                tracing::warn!(id = %step[pos].0, error = %e, source, "a block asked by another rank failed to read");
                FetchState::Failed
            }
        };
    }
    Ok(states)
}

/// Starts the empty message that answers a block the holder does not send.
fn send_empty(replies: &Comm, sends: &mut Sends, source: i32, tag: i32) -> Result<()> {
    // SAFETY: an empty message reads no memory.
    unsafe { replies.isend(sends, &[], source, tag) }
}

/// The most bytes one fetch asks of a holder (the client splits larger batches).
pub(crate) const MAX_FETCH_BYTES: usize = 1 << 30;
/// The largest block a holder sends (an MPI message is limited to 2 GiB - 1 bytes).
const MAX_BLOCK_BYTES: usize = i32::MAX as usize;
