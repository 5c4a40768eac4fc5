//! `write_policy = "write_through"`: a put placed in a non-persistent tier is also
//! written, by one background thread, to the first persistent tier below it.
//!
//! The copy is made under the block's stripe lock, and only while the ledger still holds
//! the very put that queued it (same place, same put sequence number), so a block
//! removed, replaced or moved meanwhile never gets a stale copy. Room in the persistent
//! tier is made as for a put (its coldest blocks move down or are dropped). A copy that
//! cannot be written is counted (`write_through_failures`) and reported by the next
//! [`super::CascadeStore::flush`], which otherwise waits until every queued copy is
//! written and then flushes the tiers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::Core;
use super::ledger::Entry;
use crate::{BlockId, Error, ErrorKind, Result};

/// Copies written per pass of the worker before it looks at the queue again.
const PASS: usize = 64;
/// How many times a copy retries a persistent tier that reported full after room was
/// made (a put moving blocks down may take the room meanwhile).
const ATTEMPTS: usize = 8;

struct Job {
    id: BlockId,
    entry: Entry,
    target: usize,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Jobs taken by the worker and not finished yet.
    busy: usize,
    stop: bool,
    first_error: Option<Error>,
}

struct Queue {
    state: Mutex<State>,
    /// Signalled when jobs arrive or the worker should stop.
    work: Condvar,
    /// Signalled when the queue drains.
    idle: Condvar,
}

/// The write-through queue and its worker thread.
pub(super) struct WriteThrough {
    queue: Arc<Queue>,
    worker: Option<JoinHandle<()>>,
}

impl WriteThrough {
    pub fn start(core: Arc<Core>) -> Result<Self> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
        });
        let worker_queue = Arc::clone(&queue);
        let worker = std::thread::Builder::new()
            .name("cascade-write-through".into())
            .spawn(move || run(&core, &worker_queue))
            .map_err(|e| Error::io("could not start the write-through thread", e))?;
        Ok(Self {
            queue,
            worker: Some(worker),
        })
    }

    /// Queues the copy of the block that `entry` records into tier `target`.
    pub fn enqueue(&self, id: BlockId, entry: Entry, target: usize) {
        let mut state = self.queue.state.lock();
        state.jobs.push_back(Job { id, entry, target });
        drop(state);
        self.queue.work.notify_one();
    }

    /// Waits until every queued copy is written; the first failure since the last call.
    pub fn wait_idle(&self) -> Result<()> {
        let mut state = self.queue.state.lock();
        while !state.jobs.is_empty() || state.busy > 0 {
            self.queue.idle.wait(&mut state);
        }
        state.first_error.take().map_or(Ok(()), Err)
    }

    /// Writes what is queued, then stops the worker.
    pub fn stop(mut self) {
        self.queue.state.lock().stop = true;
        self.queue.work.notify_all();
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!("the write-through thread panicked");
        }
    }
}

fn run(core: &Core, queue: &Queue) {
    loop {
        let batch: Vec<Job> = {
            let mut state = queue.state.lock();
            while state.jobs.is_empty() && !state.stop {
                queue.work.wait(&mut state);
            }
            if state.jobs.is_empty() {
                return;
            }
            let n = state.jobs.len().min(PASS);
            state.busy = n;
            state.jobs.drain(..n).collect()
        };
        let mut failure = None;
        for job in batch {
            if let Err(e) = copy(core, &job) {
                core.ledger.write_through_failed();
                tracing::warn!(id = %job.id, error = %e, "write-through copy failed");
                failure.get_or_insert(e);
            }
        }
        let mut state = queue.state.lock();
        state.busy = 0;
        if let Some(e) = failure {
            state.first_error.get_or_insert(e);
        }
        if state.jobs.is_empty() {
            queue.idle.notify_all();
        }
    }
}

/// Writes one block's persistent copy, if the ledger still holds the put that queued it.
fn copy(core: &Core, job: &Job) -> Result<()> {
    let Job { id, entry, target } = *job;
    if core.ledger.get(&id) != Some(entry) {
        return Ok(());
    }
    let target_tier = &core.tiers[target];
    let len = usize::try_from(entry.len)
        .map_err(|_| Error::new(ErrorKind::TooLarge, "block larger than the address space"))?;
    let source = &core.tiers[entry.tier];
    let mut last_full = None;
    for _ in 0..ATTEMPTS {
        // Puts moving blocks down may take the room made here: make it again.
        if !core.make_room(target, entry.len)? && core.free_bytes(target) < entry.len {
            break;
        }
        let _guard = core.stripes.lock(&id);
        if core.ledger.get(&id) != Some(entry) {
            return Ok(());
        }
        let written = target_tier.put_with(id, len, &mut |buf| {
            let n = source.get(id, buf)?;
            if n == len {
                Ok(())
            } else {
                Err(
                    Error::new(ErrorKind::Corrupt, "block length changed while copying")
                        .with_context("id", id),
                )
            }
        });
        match written {
            Ok(()) => {
                if !core.ledger.set_backup(id, entry, target) {
                    // Cannot happen under the stripe lock; never leave an unrecorded copy.
                    core.remove_copy(target, id);
                }
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::TierFull => last_full = Some(e),
            Err(e) => return Err(e.at("write_through", target_tier.name())),
        }
    }
    Err(last_full
        .unwrap_or_else(|| {
            crate::tier::tier_full(
                target_tier.name(),
                entry.len,
                target_tier.used(),
                target_tier.capacity(),
            )
        })
        .at("write_through", target_tier.name()))
}
