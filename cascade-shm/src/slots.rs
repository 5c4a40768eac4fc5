//! The slot table inside the mapping: one 64-byte record per stored block.
//!
//! Records are read and written as eight `AtomicU64` words, so that this process, a
//! process that died mid-write, and the next one never race on plain memory. Word 0 is
//! the commit word; see [`SlotRecord`] for the publication order.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout::SlotRecord;

const WORDS: usize = 8;
const COMMIT: usize = 0;
const CHECK: usize = 6;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Nothing committed.
    Empty,
    /// A committed record whose own check passes.
    Committed(SlotRecord),
    /// A committed record that fails its check (torn or overwritten).
    Damaged,
}

/// View of the slot table of a mapped pool.
pub struct SlotTable {
    words: NonNull<AtomicU64>,
    count: usize,
}

// SAFETY: the table is only accessed through atomics, and its mapping outlives it (the
// tier owns both and drops the table first).
unsafe impl Send for SlotTable {}
// SAFETY: as above.
unsafe impl Sync for SlotTable {}

impl SlotTable {
    /// # Safety
    /// `base` must point to `count * 64` bytes, 8-byte aligned, mapped for as long as
    /// the table lives, and accessed by nothing but this table.
    pub unsafe fn new(base: NonNull<u8>, count: usize) -> Self {
        Self {
            words: base.cast(),
            count,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.count
    }

    fn word(&self, slot: usize, word: usize) -> &AtomicU64 {
        assert!(slot < self.count, "slot {slot} outside the table");
        // SAFETY: slot < count, so the word lies inside the table's mapping, which is
        // 8-byte aligned and outlives `self`.
        unsafe { &*self.words.as_ptr().add(slot * WORDS + word) }
    }

    /// Reads slot `slot`.
    pub fn read(&self, slot: usize) -> SlotState {
        let seq = self.word(slot, COMMIT).load(Ordering::Acquire);
        if seq == 0 {
            return SlotState::Empty;
        }
        let w = |i| self.word(slot, i).load(Ordering::Relaxed);
        let record = SlotRecord {
            seq,
            id: u128::from(w(1)) | (u128::from(w(2)) << 64),
            offset: w(3),
            len: w(4),
            checksum: w(5),
        };
        if w(CHECK) == record.record_check() {
            SlotState::Committed(record)
        } else {
            SlotState::Damaged
        }
    }

    /// Makes `record` visible in slot `slot`. The caller owns the slot, has written the
    /// block's bytes already, and `record.seq` is not zero.
    pub fn publish(&self, slot: usize, record: &SlotRecord) {
        debug_assert_ne!(record.seq, 0);
        let words = [
            record.id as u64,
            (record.id >> 64) as u64,
            record.offset,
            record.len,
            record.checksum,
            record.record_check(),
        ];
        for (i, value) in words.iter().enumerate() {
            self.word(slot, i + 1).store(*value, Ordering::Relaxed);
        }
        // Release: the payload and the words above are visible before the commit word,
        // to this process's readers and to whoever maps the file after a crash.
        self.word(slot, COMMIT).store(record.seq, Ordering::Release);
    }

    /// Empties slot `slot`; the block's extent may be reused only after this.
    pub fn retract(&self, slot: usize) {
        self.word(slot, COMMIT).store(0, Ordering::Release);
    }
}
