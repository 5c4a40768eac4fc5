//! The queue between puts and the background committer: puts push the slots they
//! filled; the committer thread hashes each block and commits its slot record; `flush`
//! and drop wait until the queue is drained.

use parking_lot::{Condvar, Mutex};

use cascade_core::BlockId;

/// A put whose slot is not committed yet.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// The block.
    pub id: BlockId,
    /// The put's sequence number.
    pub seq: u64,
}

#[derive(Default)]
struct State {
    items: Vec<Pending>,
    in_progress: usize,
    stop: bool,
}

/// A multi-producer queue drained by one committer.
#[derive(Default)]
pub struct CommitQueue {
    state: Mutex<State>,
    work: Condvar,
    drained: Condvar,
}

impl CommitQueue {
    /// Queues one put.
    pub fn push(&self, pending: Pending) {
        let mut state = self.state.lock();
        state.items.push(pending);
        if state.items.len() == 1 {
            self.work.notify_one();
        }
    }

    /// Waits for work; returns everything queued, or `None` once stopped and empty.
    pub fn take(&self) -> Option<Vec<Pending>> {
        let mut state = self.state.lock();
        loop {
            if !state.items.is_empty() {
                let batch = std::mem::take(&mut state.items);
                state.in_progress = batch.len();
                return Some(batch);
            }
            if state.stop {
                return None;
            }
            self.work.wait(&mut state);
        }
    }

    /// The committer finished the batch it took.
    pub fn finished(&self) {
        let mut state = self.state.lock();
        state.in_progress = 0;
        if state.items.is_empty() {
            self.drained.notify_all();
        }
    }

    /// Waits until every put queued before the call is committed.
    pub fn wait_drained(&self) {
        let mut state = self.state.lock();
        while !state.items.is_empty() || state.in_progress > 0 {
            self.drained.wait(&mut state);
        }
    }

    /// Asks the committer to finish what is queued and exit.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.work.notify_all();
    }
}
