//! Write lanes: each writing thread appends to a segment of its own lane, so that the
//! blocks one thread writes lie next to each other on disk.
//!
//! Threads that write at the same time into one segment interleave their batches, and a
//! thread that later reads its blocks back in the order it wrote them (a conversation
//! re-reading its earlier turns, a benchmark's worker) then skips over the other
//! threads' records: the kernel sees no sequential stream, keeps its readahead small and
//! the device serves many small requests. With a lane per thread each stream stays
//! contiguous in its own file, whose readahead state is its own. On Lustre, several
//! files being appended also spread the writes over more storage targets.

use std::collections::HashMap;
use std::thread::ThreadId;

/// Threads remembered before the assignments start over (threads that come and go must
/// not grow the map without bound; a thread that is still writing then simply gets a
/// lane again).
const MAX_REMEMBERED: usize = 4096;

/// Which lane each writing thread appends to: lanes are handed out round robin in the
/// order threads first write, so the threads of one pool get distinct lanes as long as
/// there are enough of them.
#[derive(Debug)]
pub struct Lanes {
    count: usize,
    next: usize,
    of_thread: HashMap<ThreadId, usize>,
}

impl Lanes {
    /// `count` lanes (at least one).
    pub fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
            next: 0,
            of_thread: HashMap::new(),
        }
    }

    /// The lane of `thread`, assigning the next one on its first write.
    pub fn of(&mut self, thread: ThreadId) -> usize {
        if let Some(lane) = self.of_thread.get(&thread) {
            return *lane;
        }
        if self.of_thread.len() >= MAX_REMEMBERED {
            self.of_thread.clear();
        }
        let lane = self.next;
        self.next = (self.next + 1) % self.count;
        self.of_thread.insert(thread, lane);
        lane
    }

    /// The lane of the calling thread.
    pub fn of_caller(&mut self) -> usize {
        self.of(std::thread::current().id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawned_thread_id() -> ThreadId {
        std::thread::spawn(|| std::thread::current().id())
            .join()
            .unwrap()
    }

    #[test]
    fn threads_get_distinct_lanes_round_robin_and_keep_them() {
        let mut lanes = Lanes::new(3);
        let threads: Vec<ThreadId> = (0..4).map(|_| spawned_thread_id()).collect();
        let assigned: Vec<usize> = threads.iter().map(|t| lanes.of(*t)).collect();
        assert_eq!(assigned, [0, 1, 2, 0]);
        assert_eq!(lanes.of(threads[1]), 1, "a thread keeps its lane");
        assert_eq!(
            lanes.of_caller(),
            1,
            "the next new thread continues the round"
        );
    }

    #[test]
    fn zero_lanes_act_as_one() {
        let mut lanes = Lanes::new(0);
        assert_eq!(lanes.of_caller(), 0);
        assert_eq!(lanes.of(spawned_thread_id()), 0);
    }
}
