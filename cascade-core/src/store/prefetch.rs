//! Prefetch: blocks moved into a faster tier in the background, ahead of the gets that
//! will read them, behind a handle the caller polls, waits on or cancels.
//!
//! A prefetch is a request queued to one of `max_prefetches` worker threads (started on
//! the first prefetch); later requests wait in order. A worker takes the request's
//! blocks by the tier that holds them, in chunks, makes room in the target tier first
//! (its coldest blocks move down as for any put, so prefetched blocks count against its
//! capacity and leave it by the same recency policy), then copies each chunk under the
//! blocks' stripe locks with one batch read from the slower tier straight into the
//! target's memory, repoints the ledger and removes the old copies: a promotion, in
//! batches. While a chunk is copied its blocks are registered as in flight, and a get of
//! one of them waits for the chunk instead of reading the block a second time.
//!
//! Cancelling, or dropping the handle, stops the request between chunks: the chunk being
//! copied is stored whole or not at all (a cancelled fill stores nothing), blocks already
//! moved stay in the faster tier, the rest stay where they were, and the request leaves
//! the queue at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::ledger::{Entry, Move};
use super::{CascadeStore, Core};
use crate::config::WritePolicy;
use crate::tier::FillTarget;
use crate::{BlockId, Error, ErrorKind, Result};

/// Blocks copied per chunk at most: a get waiting for one of them waits for this many.
const CHUNK_BLOCKS: usize = 64;
/// Bytes copied per chunk at most (also at most a quarter of the target's capacity).
const CHUNK_BYTES: u64 = 16 << 20;
/// Passes over the blocks a chunk could not take (room taken by another thread
/// meanwhile, a block moved meanwhile) before the rest fail with `TierFull`, as a put
/// tries a full tier again (`PUT_ATTEMPTS_PER_TIER`).
const ROUNDS: usize = 8;

/// Where a prefetch moves blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefetchTarget {
    /// The fastest tier faster than the block's that takes it and where room can be
    /// made (a block already in the fastest tier that takes it stays).
    #[default]
    Fastest,
    /// This tier (position, fastest first); blocks already there or in a faster tier
    /// stay where they are.
    Tier(usize),
}

/// What a prefetch did with one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetched {
    /// Moved into `tier` (position) by this prefetch.
    Moved {
        /// Where the block is now.
        tier: usize,
    },
    /// Already in the target tier or a faster one; left there and marked recently used.
    Resident {
        /// Where the block is.
        tier: usize,
    },
    /// Not stored (counted as missing; nothing to load).
    Missing,
    /// The prefetch was cancelled before the block was moved; it stays where it was.
    Cancelled,
}

impl Prefetched {
    /// Whether the block is in the target tier (or a faster one) now.
    pub fn is_ready(&self) -> bool {
        matches!(self, Prefetched::Moved { .. } | Prefetched::Resident { .. })
    }
}

/// One block's outcome: what was done, or the typed error that stopped it (`TierFull`
/// when no room could be made, `Corrupt` when its bytes failed their checksum, `Io`).
pub type PrefetchResult = Result<Prefetched>;

/// Counts of a prefetch's blocks so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchProgress {
    /// Blocks asked for.
    pub blocks: usize,
    /// Blocks in the target tier or a faster one (moved or already there).
    pub ready: usize,
    /// Blocks not stored.
    pub missing: usize,
    /// Blocks that failed with an error.
    pub failed: usize,
    /// Blocks left where they were because the prefetch was cancelled.
    pub cancelled: usize,
    /// Blocks not settled yet.
    pub pending: usize,
}

/// A prefetch's shared state: what the worker settles and the handle reads.
struct Request {
    ids: Vec<BlockId>,
    target: PrefetchTarget,
    cancelled: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    outcomes: Vec<Option<PrefetchResult>>,
    progress: PrefetchProgress,
    done: bool,
    waker: Option<Waker>,
}

impl Request {
    fn new(ids: Vec<BlockId>, target: PrefetchTarget) -> Self {
        let blocks = ids.len();
        Self {
            target,
            cancelled: AtomicBool::new(false),
            state: Mutex::new(State {
                outcomes: (0..blocks).map(|_| None).collect(),
                progress: PrefetchProgress {
                    blocks,
                    pending: blocks,
                    ..PrefetchProgress::default()
                },
                done: false,
                waker: None,
            }),
            changed: Condvar::new(),
            ids,
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Records outcomes (`(index, outcome)`) and wakes whoever watches the progress.
    fn settle(&self, outcomes: impl IntoIterator<Item = (usize, PrefetchResult)>) {
        let mut state = self.state.lock();
        for (index, outcome) in outcomes {
            if state.outcomes[index].is_some() {
                continue;
            }
            let progress = &mut state.progress;
            match &outcome {
                Ok(done) if done.is_ready() => progress.ready += 1,
                Ok(Prefetched::Missing) => progress.missing += 1,
                Ok(_) => progress.cancelled += 1,
                Err(_) => progress.failed += 1,
            }
            progress.pending -= 1;
            state.outcomes[index] = Some(outcome);
        }
        self.changed.notify_all();
    }

    /// Settles whatever is left as cancelled and marks the request done.
    fn finish(&self) {
        let left: Vec<usize> = {
            let state = self.state.lock();
            if state.done {
                return;
            }
            (0..state.outcomes.len())
                .filter(|&i| state.outcomes[i].is_none())
                .collect()
        };
        self.settle(left.into_iter().map(|i| (i, Ok(Prefetched::Cancelled))));
        let waker = {
            let mut state = self.state.lock();
            state.done = true;
            state.waker.take()
        };
        self.changed.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Blocks being copied now, each with the gate of its chunk.
#[derive(Default)]
struct InFlight {
    gates: Mutex<HashMap<BlockId, Arc<Gate>>>,
    /// Entries of `gates`: gets skip the map while there are none.
    count: AtomicUsize,
}

#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
    }
}

impl InFlight {
    /// Registers `ids` (those no other chunk has registered) behind one gate.
    fn register(&self, ids: &[BlockId]) -> (Arc<Gate>, Vec<BlockId>) {
        let gate = Arc::new(Gate::default());
        let mut gates = self.gates.lock();
        let mine: Vec<BlockId> = ids
            .iter()
            .copied()
            .filter(|id| {
                if gates.contains_key(id) {
                    return false;
                }
                gates.insert(*id, Arc::clone(&gate));
                true
            })
            .collect();
        self.count.fetch_add(mine.len(), Ordering::Release);
        (gate, mine)
    }

    fn release(&self, gate: &Gate, ids: &[BlockId]) {
        {
            let mut gates = self.gates.lock();
            for id in ids {
                gates.remove(id);
            }
            self.count.fetch_sub(ids.len(), Ordering::Release);
        }
        *gate.open.lock() = true;
        gate.opened.notify_all();
    }

    /// Waits until no chunk copies `id`.
    fn wait_for(&self, id: &BlockId) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let gate = self.gates.lock().get(id).cloned();
        if let Some(gate) = gate {
            gate.wait();
        }
    }
}

struct Queue {
    requests: VecDeque<Arc<Request>>,
    stopping: bool,
}

/// What the store and its prefetch workers share.
struct Shared {
    core: Arc<Core>,
    queue: Mutex<Queue>,
    queued: Condvar,
    in_flight: InFlight,
    /// Runs the source tier's batch read while stripe locks are held: tiers whose
    /// batch read uses the global rayon pool would otherwise wait there behind jobs
    /// that wait for those locks.
    reader: OnceLock<std::result::Result<rayon::ThreadPool, String>>,
}

/// The store's prefetch queue and workers.
pub(super) struct Prefetcher {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    max: usize,
}

impl Prefetcher {
    pub(super) fn new(core: Arc<Core>, max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                core,
                queue: Mutex::new(Queue {
                    requests: VecDeque::new(),
                    stopping: false,
                }),
                queued: Condvar::new(),
                in_flight: InFlight::default(),
                reader: OnceLock::new(),
            }),
            workers: Mutex::new(Vec::new()),
            max: max.max(1),
        }
    }

    /// Waits while a prefetch copies `id`, so the get that follows reads the moved copy.
    #[inline]
    pub(super) fn wait_for(&self, id: &BlockId) {
        self.shared.in_flight.wait_for(id);
    }

    fn submit(&self, request: Arc<Request>) -> Result<()> {
        {
            let mut workers = self.workers.lock();
            while workers.len() < self.max {
                let shared = Arc::clone(&self.shared);
                let worker = std::thread::Builder::new()
                    .name(format!("cascade-prefetch-{}", workers.len()))
                    .spawn(move || shared.work())
                    .map_err(|e| {
                        Error::new(ErrorKind::Io, "cannot start a prefetch thread")
                            .with_context("cause", e)
                    })?;
                workers.push(worker);
            }
        }
        let mut queue = self.shared.queue.lock();
        if queue.stopping {
            drop(queue);
            request.finish();
            return Ok(());
        }
        queue.requests.push_back(request);
        drop(queue);
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Cancels every request and joins the workers.
    pub(super) fn stop(&self) {
        let queued: Vec<Arc<Request>> = {
            let mut queue = self.shared.queue.lock();
            queue.stopping = true;
            queue.requests.drain(..).collect()
        };
        for request in queued {
            request.cancelled.store(true, Ordering::Release);
            request.finish();
        }
        self.shared.queued.notify_all();
        for worker in self.workers.lock().drain(..) {
            if worker.join().is_err() {
                tracing::warn!("a prefetch thread panicked");
            }
        }
    }
}

impl Shared {
    fn work(self: Arc<Self>) {
        loop {
            let request = {
                let mut queue = self.queue.lock();
                loop {
                    if let Some(request) = queue.requests.pop_front() {
                        break request;
                    }
                    if queue.stopping {
                        return;
                    }
                    self.queued.wait(&mut queue);
                }
            };
            if self.queue.lock().stopping {
                request.cancelled.store(true, Ordering::Release);
            }
            if !request.is_cancelled() {
                self.run(&request);
            }
            request.finish();
        }
    }

    /// Takes a cancelled request out of the queue (it frees its place at once).
    fn withdraw(&self, request: &Arc<Request>) -> bool {
        let mut queue = self.queue.lock();
        let before = queue.requests.len();
        queue.requests.retain(|r| !Arc::ptr_eq(r, request));
        before != queue.requests.len()
    }

    fn reader(&self) -> Result<&rayon::ThreadPool> {
        self.reader
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("cascade-prefetch-read-{i}"))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                Error::new(ErrorKind::Io, "cannot start the prefetch read threads")
                    .with_context("cause", e)
            })
    }

    /// The tiers a block at `at` may move to, fastest first; empty when it stays.
    fn targets(&self, at: Entry, target: PrefetchTarget) -> std::ops::Range<usize> {
        match target {
            PrefetchTarget::Fastest => {
                // A block already in the fastest tier that takes it stays.
                match (0..at.tier).find(|&t| self.core.accepts(t, at.len)) {
                    Some(first) => first..at.tier,
                    None => 0..0,
                }
            }
            PrefetchTarget::Tier(t) if t < at.tier => t..t + 1,
            PrefetchTarget::Tier(_) => 0..0,
        }
    }

    fn run(&self, request: &Request) {
        let ledger = &self.core.ledger;
        let mut first_of: HashMap<BlockId, usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        let mut pending: Vec<(usize, BlockId)> = Vec::new();
        for (i, id) in request.ids.iter().enumerate() {
            match first_of.get(id) {
                Some(&first) => repeats.push((i, first)),
                None => {
                    first_of.insert(*id, i);
                    pending.push((i, *id));
                }
            }
        }
        for round in 0..ROUNDS {
            // Where each block is now, and whether it has to move.
            let mut settled = Vec::new();
            let mut groups: Vec<Vec<(usize, BlockId, Entry)>> =
                vec![Vec::new(); self.core.tiers.len()];
            for (i, id) in pending.drain(..) {
                match ledger.get(&id) {
                    None => settled.push((i, Ok(Prefetched::Missing))),
                    Some(at) if self.targets(at, request.target).is_empty() => {
                        ledger.touch(at.tier, &id);
                        settled.push((i, Ok(Prefetched::Resident { tier: at.tier })));
                    }
                    Some(at) => groups[at.tier].push((i, id, at)),
                }
            }
            request.settle(settled);
            let mut retry = Vec::new();
            for group in groups.iter().filter(|g| !g.is_empty()) {
                for chunk in self.chunks(group, request.target) {
                    if request.is_cancelled() {
                        return;
                    }
                    self.move_chunk(request, chunk, &mut retry);
                }
            }
            if retry.is_empty() {
                break;
            }
            if round + 1 == ROUNDS {
                request.settle(retry.into_iter().map(|(i, id)| {
                    (
                        i,
                        Err(no_room(
                            id,
                            "the faster tiers stayed full while it was moved",
                        )),
                    )
                }));
                break;
            }
            pending = retry;
            // Other threads may hold the target's coldest blocks for moves of their
            // own: once they are done there is room, or blocks to move again.
            std::thread::yield_now();
        }
        self.copy_repeats(request, &repeats);
    }

    /// Gives an id asked for twice in one request the outcome of its first occurrence.
    fn copy_repeats(&self, request: &Request, repeats: &[(usize, usize)]) {
        if repeats.is_empty() {
            return;
        }
        let copies: Vec<(usize, PrefetchResult)> = {
            let state = request.state.lock();
            repeats
                .iter()
                .filter_map(|&(i, first)| state.outcomes[first].clone().map(|o| (i, o)))
                .collect()
        };
        request.settle(copies);
    }

    /// Splits the blocks of one source tier into chunks a move takes at once.
    fn chunks<'a>(
        &self,
        group: &'a [(usize, BlockId, Entry)],
        target: PrefetchTarget,
    ) -> Vec<&'a [(usize, BlockId, Entry)]> {
        let first = self.targets(group[0].2, target).start;
        let limit = CHUNK_BYTES.min(self.core.tiers[first].capacity() / 4);
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (k, (_, _, at)) in group.iter().enumerate() {
            let full = k - start == CHUNK_BLOCKS || (k > start && bytes + at.len > limit);
            if full {
                chunks.push(&group[start..k]);
                start = k;
                bytes = 0;
            }
            bytes += at.len;
        }
        chunks.push(&group[start..]);
        chunks
    }

    /// Moves one chunk (blocks of one source tier) into the fastest of its targets
    /// where room is made; blocks to look at again go to `retry`.
    fn move_chunk(
        &self,
        request: &Request,
        chunk: &[(usize, BlockId, Entry)],
        retry: &mut Vec<(usize, BlockId)>,
    ) {
        let source = chunk[0].2.tier;
        let candidates = self.targets(chunk[0].2, request.target);
        let (fits, too_large): (Vec<_>, Vec<_>) = chunk
            .iter()
            .partition(|(_, _, at)| candidates.clone().any(|t| self.core.accepts(t, at.len)));
        request.settle(
            too_large
                .into_iter()
                .map(|&(i, _, at)| (i, Err(self.core.too_large(at.len)))),
        );
        if fits.is_empty() {
            return;
        }
        let total: u64 = fits.iter().map(|(_, _, at)| at.len).sum();
        // Room is made before any stripe lock is taken (see the store's module docs).
        let target = candidates.clone().find(|&t| {
            fits.iter().all(|(_, _, at)| self.core.accepts(t, at.len))
                && self.core.make_room(t, total).unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "prefetch: no room made");
                    false
                })
        });
        let Some(target) = target else {
            retry.extend(fits.iter().map(|&&(i, id, _)| (i, id)));
            return;
        };
        let ids: Vec<BlockId> = fits.iter().map(|(_, id, _)| *id).collect();
        let (gate, registered) = self.in_flight.register(&ids);
        let mut failed_reads = Vec::new();
        {
            let _guards = self.core.stripes.lock_many(ids.iter().copied());
            let (live, moved): (Vec<_>, Vec<_>) = fits
                .iter()
                .partition(|(_, id, at)| self.core.ledger.get(id) == Some(*at));
            retry.extend(moved.iter().map(|&&(i, id, _)| (i, id)));
            if !live.is_empty() {
                let outcomes = self.copy(request, source, target, &live);
                let mut settled = Vec::with_capacity(live.len());
                for (&&(i, id, at), outcome) in live.iter().zip(outcomes) {
                    match outcome {
                        Copied::Stored => {
                            self.repoint(id, at, target);
                            settled.push((i, Ok(Prefetched::Moved { tier: target })));
                        }
                        Copied::Cancelled => settled.push((i, Ok(Prefetched::Cancelled))),
                        Copied::Failed(e) => match e.kind() {
                            ErrorKind::TierFull => retry.push((i, id)),
                            ErrorKind::Corrupt | ErrorKind::NotFound => {
                                failed_reads.push((i, id, at, e));
                            }
                            _ => settled.push((i, Err(e))),
                        },
                    }
                }
                request.settle(settled);
            }
        }
        self.in_flight.release(&gate, &registered);
        // After the locks are gone: a damaged or lost block is dropped (or its
        // written-through copy takes over) as a get would do.
        for (i, id, at, e) in failed_reads {
            match self.core.after_failed_read(id, at, e) {
                Ok(true) => retry.push((i, id)),
                Ok(false) => request.settle([(i, Ok(Prefetched::Missing))]),
                Err(e) => request.settle([(i, Err(e))]),
            }
        }
    }

    /// Copies `live` from `source` into `target` through the target's batch fill, the
    /// source read as one batch into the target's buffers. Stripe locks are held.
    fn copy(
        &self,
        request: &Request,
        source: usize,
        target: usize,
        live: &[&(usize, BlockId, Entry)],
    ) -> Vec<Copied> {
        let reader = match self.reader() {
            Ok(reader) => reader,
            Err(e) => return live.iter().map(|_| Copied::Failed(e.clone())).collect(),
        };
        let src = &*self.core.tiers[source];
        let dst = &*self.core.tiers[target];
        let items: Vec<(BlockId, usize)> = live
            .iter()
            .map(|(_, id, at)| (*id, at.len as usize))
            .collect();
        let mut skipped = false;
        let results = dst.put_with_batch(&items, &mut |targets: &mut [FillTarget<'_>]| {
            if request.is_cancelled() {
                skipped = true;
                return targets.iter().map(|_| Err(cancelled())).collect();
            }
            let mut batch: Vec<(BlockId, &mut [u8])> = targets
                .iter_mut()
                .map(|(i, buf)| (items[*i].0, &mut **buf))
                .collect();
            let got = reader.install(|| src.get_batch(&mut batch));
            batch
                .iter()
                .zip(got)
                .map(|((id, buf), got)| {
                    got.and_then(|n| {
                        if n == buf.len() {
                            Ok(())
                        } else {
                            Err(Error::new(
                                ErrorKind::Corrupt,
                                "block length changed while prefetching",
                            )
                            .with_context("id", id)
                            .with_context("expected_bytes", buf.len())
                            .with_context("read_bytes", n))
                        }
                    })
                })
                .collect()
        });
        results
            .into_iter()
            .map(|result| match result {
                Ok(()) => Copied::Stored,
                Err(_) if skipped => Copied::Cancelled,
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                    Copied::Failed(e.at("prefetch", src.name()))
                }
                Err(e) => Copied::Failed(e.at("prefetch", dst.name())),
            })
            .collect()
    }

    /// Points the ledger at the copy in `target` and removes the old one (under
    /// `write_through`, an old copy in the persistent tier that would hold the block's
    /// copy stays as that copy, as for a promotion). Stripe lock held.
    fn repoint(&self, id: BlockId, from: Entry, target: usize) {
        let core = &self.core;
        let keep_copy = core.policy.write_policy == WritePolicy::WriteThrough
            && from.backup.is_none()
            && core.tiers[from.tier].capability().persistent
            && core.persistent_below(target, from.len) == Some(from.tier);
        if core
            .ledger
            .relocate(id, from, target, Move::Prefetch { keep_copy })
            && !keep_copy
        {
            core.remove_copy(from.tier, id);
        }
    }
}

enum Copied {
    Stored,
    Cancelled,
    Failed(Error),
}

fn cancelled() -> Error {
    Error::new(ErrorKind::Unavailable, "the prefetch was cancelled")
}

fn no_room(id: BlockId, reason: &str) -> Error {
    Error::new(
        ErrorKind::TierFull,
        "no room could be made for a prefetched block",
    )
    .with_context("id", id)
    .with_context("reason", reason)
}

/// A running prefetch: how far it is, a wait with or without a timeout, cancellation.
///
/// Dropping the handle cancels the prefetch (see [`PrefetchHandle::cancel`]); call
/// [`PrefetchHandle::detach`] to let it finish on its own instead. The handle is also a
/// [`Future`] of the per-block outcomes, for callers inside an async runtime (it is
/// woken from the prefetch thread; no runtime is needed or spawned).
#[must_use = "dropping a prefetch handle cancels the prefetch; call detach() to let it run"]
pub struct PrefetchHandle {
    request: Arc<Request>,
    shared: Weak<Shared>,
    detached: AtomicBool,
}

impl PrefetchHandle {
    /// The ids this prefetch was asked for (for a prefix prefetch, the stored leading
    /// keys), in order.
    pub fn ids(&self) -> &[BlockId] {
        &self.request.ids
    }

    /// How many blocks it was asked for.
    pub fn len(&self) -> usize {
        self.request.ids.len()
    }

    /// Whether it was asked for no block.
    pub fn is_empty(&self) -> bool {
        self.request.ids.is_empty()
    }

    /// Counts of its blocks so far.
    pub fn progress(&self) -> PrefetchProgress {
        self.request.state.lock().progress
    }

    /// Blocks in the target tier (or a faster one) so far.
    pub fn ready(&self) -> usize {
        self.progress().ready
    }

    /// Whether every block is settled.
    pub fn is_done(&self) -> bool {
        self.request.state.lock().done
    }

    /// Each block's outcome so far (`None`: not settled yet), in the order asked.
    pub fn outcomes(&self) -> Vec<Option<PrefetchResult>> {
        self.request.state.lock().outcomes.clone()
    }

    /// Waits until every block is settled and returns their outcomes, in order.
    pub fn wait(&self) -> Vec<PrefetchResult> {
        let mut state = self.request.state.lock();
        while !state.done {
            self.request.changed.wait(&mut state);
        }
        settled(&state.outcomes)
    }

    /// Waits at most `timeout` for every block to be settled; returns whether they are.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        // A timeout past what the clock can add (Duration::MAX) waits without a limit.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.request.state.lock();
        while !state.done {
            match deadline {
                Some(deadline) => {
                    if self
                        .request
                        .changed
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        return state.done;
                    }
                }
                None => self.request.changed.wait(&mut state),
            }
        }
        true
    }

    /// Stops the prefetch: a queued one leaves the queue, a running one stops before
    /// its next chunk (the chunk being copied is stored whole or not at all). Blocks
    /// already moved stay in the faster tier; the others stay where they were and are
    /// settled as [`Prefetched::Cancelled`]. Does not wait.
    pub fn cancel(&self) {
        self.request.cancelled.store(true, Ordering::Release);
        if let Some(shared) = self.shared.upgrade()
            && shared.withdraw(&self.request)
        {
            self.request.finish();
        }
    }

    /// Lets the prefetch run to its end without this handle: dropping it no longer
    /// cancels (the handle still reports progress and can still cancel).
    pub fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }
}

fn settled(outcomes: &[Option<PrefetchResult>]) -> Vec<PrefetchResult> {
    outcomes
        .iter()
        .map(|o| o.clone().unwrap_or(Ok(Prefetched::Cancelled)))
        .collect()
}

impl Drop for PrefetchHandle {
    fn drop(&mut self) {
        if !self.detached.load(Ordering::Acquire) {
            self.cancel();
        }
    }
}

impl Future for PrefetchHandle {
    type Output = Vec<PrefetchResult>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.request.state.lock();
        if state.done {
            return Poll::Ready(settled(&state.outcomes));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl std::fmt::Debug for PrefetchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefetchHandle")
            .field("target", &self.request.target)
            .field("progress", &self.progress())
            .finish()
    }
}

impl CascadeStore {
    /// Starts moving `ids` into the fastest tier that takes them and has room, in the
    /// background, and returns at once. See [`CascadeStore::prefetch_to`].
    pub fn prefetch(&self, ids: &[BlockId]) -> Result<PrefetchHandle> {
        self.prefetch_to(ids, PrefetchTarget::Fastest)
    }

    /// Starts moving `ids` into `target` in the background and returns a handle at once.
    ///
    /// At most `max_prefetches` prefetches (config, default 2) move blocks at a time;
    /// later ones wait in order. Room in the target is made as for a put (its coldest
    /// blocks move down), so prefetched blocks count against its capacity and are
    /// evicted by the same policy; a get of a block being moved waits for the move
    /// instead of reading it twice. Ids not stored are settled as
    /// [`Prefetched::Missing`]; a block that cannot move ends with a typed error
    /// (`TierFull`, `TooLarge`, `Corrupt`, `Io`) and stays readable where it was,
    /// except one whose bytes failed their checksum, which is dropped as a get drops
    /// it. The store counts `prefetched`, `prefetch_hits` and `prefetch_wasted`.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] for a target tier that does not exist;
    /// [`ErrorKind::Io`] when the prefetch threads cannot start.
    pub fn prefetch_to(&self, ids: &[BlockId], target: PrefetchTarget) -> Result<PrefetchHandle> {
        if let PrefetchTarget::Tier(t) = target
            && t >= self.core.tiers.len()
        {
            return Err(
                Error::new(ErrorKind::InvalidInput, "no such tier to prefetch into")
                    .with_context("tier", t)
                    .with_context("tiers", self.core.tiers.len()),
            );
        }
        let request = Arc::new(Request::new(ids.to_vec(), target));
        let handle = PrefetchHandle {
            request: Arc::clone(&request),
            shared: Arc::downgrade(&self.prefetcher.shared),
            detached: AtomicBool::new(false),
        };
        if ids.is_empty() {
            request.finish();
        } else {
            self.prefetcher.submit(request)?;
        }
        Ok(handle)
    }

    /// Prefetches the blocks of a token-prefix chain that an engine can load: the
    /// leading stored keys ([`CascadeStore::lookup_prefix`]); the handle's `len()` is
    /// their count. Keys after the first one not stored are not prefetched (the engine
    /// recomputes from there).
    pub fn prefetch_prefix(&self, keys: &[BlockId]) -> Result<PrefetchHandle> {
        self.prefetch_prefix_to(keys, PrefetchTarget::Fastest)
    }

    /// [`CascadeStore::prefetch_prefix`] into `target`.
    pub fn prefetch_prefix_to(
        &self,
        keys: &[BlockId],
        target: PrefetchTarget,
    ) -> Result<PrefetchHandle> {
        let stored = self.lookup_prefix(keys);
        self.prefetch_to(&keys[..stored], target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_settles_each_block_once_and_finish_cancels_the_rest() {
        let ids: Vec<BlockId> = (1..=3u128).map(BlockId::from_u128).collect();
        let request = Request::new(ids, PrefetchTarget::Fastest);
        request.settle([(0, Ok(Prefetched::Moved { tier: 0 }))]);
        request.settle([(2, Ok(Prefetched::Missing))]);
        request.finish();
        let state = request.state.lock();
        assert!(state.done);
        assert_eq!(
            state.progress,
            PrefetchProgress {
                blocks: 3,
                ready: 1,
                missing: 1,
                cancelled: 1,
                failed: 0,
                pending: 0,
            }
        );
        assert!(matches!(state.outcomes[1], Some(Ok(Prefetched::Cancelled))));
    }
}
