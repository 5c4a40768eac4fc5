//! Reads: the block's tier copies into the caller's buffer; promotion on read.

use super::ledger::{Entry, Gone, Move};
use super::{CascadeStore, Core};
use crate::config::WritePolicy;
use crate::metrics::{Call, Timer};
use crate::{BlockId, Error, ErrorKind, Result};

/// How many times a get follows a block that moved while it was being read.
pub(super) const GET_ATTEMPTS: usize = 8;

impl CascadeStore {
    /// Copies the block into the start of `out`. Returns `Ok(None)` when it is not stored,
    /// `Ok(Some(len))` when found.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] when `out` is too small (nothing is copied);
    /// [`ErrorKind::Corrupt`] when the stored bytes fail their checksum (the block is
    /// dropped, never served; under `write_through` its persistent copy serves instead).
    pub fn get(&self, id: BlockId, out: &mut [u8]) -> Result<Option<usize>> {
        let timer = Timer::start(self.latency());
        let found = self.read_block(id, out);
        timer.get(Call::Single);
        found
    }

    /// [`CascadeStore::get`] without its latency sample (batches record one of their own).
    pub(super) fn read_block(&self, id: BlockId, out: &mut [u8]) -> Result<Option<usize>> {
        self.prefetcher.wait_for(&id);
        for _ in 0..GET_ATTEMPTS {
            let Some(at) = self.core.ledger.get(&id) else {
                break;
            };
            if (out.len() as u64) < at.len {
                return Err(crate::tier::buffer_too_small(id, at.len, out.len()));
            }
            match self.core.tiers[at.tier].get(id, out) {
                Ok(n) => {
                    self.core.ledger.hit(at.tier, &id);
                    if self.core.policy.promote_on_read && at.tier > 0 {
                        self.promote(id, at, &out[..n]);
                    }
                    return Ok(Some(n));
                }
                Err(e) => {
                    if !self.after_failed_read(id, at, e)? {
                        break;
                    }
                }
            }
        }
        self.core.ledger.miss();
        Ok(None)
    }

    /// What a tier read of `id` at `at` that failed with `error` means for the caller:
    /// `Ok(true)` look again (the block moved between the lookup and the read, or its
    /// written-through copy serves now); `Ok(false)` the block is gone (its tier lost
    /// it, e.g. dropped as corrupt at open), a miss; `Err` fail with the error, after
    /// dropping a block whose bytes failed their checksum.
    pub(super) fn after_failed_read(&self, id: BlockId, at: Entry, error: Error) -> Result<bool> {
        self.core.after_failed_read(id, at, error)
    }

    /// Copies a block just read from a slower tier into the fastest tier that takes it.
    /// Best effort: a failure leaves the block where it was.
    pub(super) fn promote(&self, id: BlockId, from: Entry, bytes: &[u8]) {
        let Some(target) = (0..from.tier).find(|&t| self.core.accepts(t, from.len)) else {
            return;
        };
        match self.core.make_room(target, from.len) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(%id, error = %e, "promotion skipped");
                return;
            }
        }
        if let Err(e) = self.move_up(id, from, target, Some(bytes)) {
            tracing::debug!(%id, error = %e, "promotion failed; the block stays where it was");
        }
    }

    /// Copies `id` from `from` into tier `target` (room already made), repoints the
    /// ledger and removes the old copy (under `write_through`, an old copy in the
    /// persistent tier that would hold the block's copy stays as that copy). `bytes`
    /// are the block's bytes when the caller has them in host memory; without them the
    /// copy is read from the old tier. Returns false when the block moved or went
    /// meanwhile (nothing is done then).
    pub(super) fn move_up(
        &self,
        id: BlockId,
        from: Entry,
        target: usize,
        bytes: Option<&[u8]>,
    ) -> Result<bool> {
        let _guard = self.core.stripes.lock(&id);
        if self.core.ledger.get(&id) != Some(from) {
            return Ok(false);
        }
        let upper = &self.core.tiers[target];
        let lower = &self.core.tiers[from.tier];
        let copied = match bytes {
            // A device tier registered the pool below with the driver: copying from there
            // is one DMA, while the caller's buffer is pageable and would be staged.
            Some(bytes) if !(upper.capability().device_memory && lower.host_region().is_some()) => {
                upper.put(id, bytes)
            }
            _ => lower.get_with(id, &mut |held| upper.put(id, held)),
        };
        copied.map_err(|e| e.at("promote", upper.name()))?;
        let keep_copy = self.core.policy.write_policy == WritePolicy::WriteThrough
            && from.backup.is_none()
            && lower.capability().persistent
            && self.core.persistent_below(target, from.len) == Some(from.tier);
        self.core
            .ledger
            .relocate(id, from, target, Move::Promote { keep_copy });
        if !keep_copy {
            self.core.remove_copy(from.tier, id);
        }
        Ok(true)
    }
}

impl Core {
    /// [`CascadeStore::after_failed_read`], for callers without the store (prefetches).
    pub(super) fn after_failed_read(&self, id: BlockId, at: Entry, error: Error) -> Result<bool> {
        let corrupt = match error.kind() {
            ErrorKind::NotFound => false,
            ErrorKind::Corrupt => true,
            _ => return Err(error.at("get", self.tiers[at.tier].name())),
        };
        if self.ledger.get(&id) != Some(at) {
            return Ok(true);
        }
        let _guard = self.stripes.lock(&id);
        // Read without the lock, the block may have moved up and back down meanwhile:
        // the same entry again, its copy there again. Only a copy still missing under
        // the lock is lost.
        if !corrupt && self.tiers[at.tier].contains(id) {
            return Ok(true);
        }
        if let Some(backup) = at.backup {
            // The persistent copy takes over; the damaged one is gone from its tier.
            if corrupt {
                self.ledger.count_corrupt(at.tier);
            }
            if self.ledger.relocate(id, at, backup, Move::Recover) {
                self.remove_copy(at.tier, id);
            }
            return Ok(true);
        }
        let why = if corrupt { Gone::Corrupt } else { Gone::Lost };
        if !self.ledger.forget(id, at, why) {
            return Ok(true);
        }
        self.discard(id, at, None);
        if corrupt {
            Err(error.at("get", self.tiers[at.tier].name()))
        } else {
            Ok(false)
        }
    }
}
