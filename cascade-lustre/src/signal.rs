//! [`Signal`]: how puts and removes wake the compaction thread, and how the tier stops
//! it. Its own module so the store (which wakes) and the compactor (which waits) do not
//! depend on each other.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    wake: bool,
    stop: bool,
}

/// Wakes the compaction thread.
#[derive(Default)]
pub struct Signal {
    state: Mutex<State>,
    cond: Condvar,
}

impl Signal {
    /// Asks for a compaction pass.
    pub fn wake(&self) {
        self.state.lock().wake = true;
        self.cond.notify_one();
    }

    /// Asks the thread to end after its current pass.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.cond.notify_one();
    }

    /// Waits for a wake-up (or 5 s, for a periodic pass); false once stopped.
    pub fn wait(&self) -> bool {
        let mut state = self.state.lock();
        while !state.wake && !state.stop {
            self.cond.wait_for(&mut state, Duration::from_secs(5));
        }
        state.wake = false;
        !state.stop
    }
}
