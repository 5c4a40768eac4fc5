//! Lending: the caller reads blocks where they lie in the tiers' memory instead of
//! having them copied out, so that a cluster holder can hand a block from its shm pool
//! straight to MPI.

use super::CascadeStore;
use super::reads::GET_ATTEMPTS;
use crate::tier::{BatchVisit, CheckedVisit, apply_checked_visits};
use crate::{BlockId, Result};

impl CascadeStore {
    /// Lends the bytes of many blocks to `visit` without copying them out of the tiers
    /// that can lend (the shm pool lends in place; the file tier reads into its own
    /// buffers; a tier that cannot lend copies into a temporary buffer).
    ///
    /// `visit` gets `(position in ids, bytes)` for blocks found and returns one result
    /// per block it was given, in order; the bytes are valid only while it runs. It may
    /// be called several times: once per run of consecutive ids held by the same tier
    /// (and the file tier splits long runs into chunks). Positions ascend across calls,
    /// except for a block that moved between tiers while it was being lent, which is lent
    /// again from its new place after the others.
    ///
    /// One result per id, in order: `Ok(true)` the block was lent and `visit` accepted
    /// it, `Ok(false)` it is not stored, `Err` it could not be read (a block failing its
    /// checksum is dropped, as a get drops it) or `visit` returned that error for it.
    /// Lending counts as a read of the block (hits, recency) but does not promote it: the
    /// caller holds no copy to promote from.
    pub fn get_with_batch(&self, ids: &[BlockId], visit: &mut BatchVisit<'_>) -> Vec<Result<bool>> {
        self.get_with_batch_checked(ids, &mut |lent| {
            let blocks: Vec<(usize, &[u8])> =
                lent.iter().map(|&(i, bytes, _)| (i, bytes)).collect();
            visit(&blocks)
        })
    }

    /// [`CascadeStore::get_with_batch`] that also hands each block's checksum as its tier
    /// stored it (XXH3-64 of the bytes as written; `None` where the tier keeps none, or
    /// has not committed it yet): see [`Tier::get_with_batch_checked`](crate::Tier::get_with_batch_checked).
    /// `visit` gets `(position in ids, bytes, checksum)`.
    pub fn get_with_batch_checked(
        &self,
        ids: &[BlockId],
        visit: &mut CheckedVisit<'_>,
    ) -> Vec<Result<bool>> {
        for id in ids {
            self.prefetcher.wait_for(id);
        }
        // On the caller's thread, not the store's pool: `visit` need not be `Send`.
        let mut results: Vec<Option<Result<bool>>> = ids.iter().map(|_| None).collect();
        let mut located: Vec<(usize, super::Entry)> = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match self.core.ledger.get(id) {
                Some(at) => located.push((i, at)),
                None => {
                    self.core.ledger.miss();
                    results[i] = Some(Ok(false));
                }
            }
        }
        let mut retry: Vec<usize> = Vec::new();
        for run in located.chunk_by(|(_, a), (_, b)| a.tier == b.tier) {
            self.lend_run(ids, run, visit, &mut results, &mut retry);
        }
        for i in retry {
            results[i] = Some(self.lend_block(ids[i], i, visit));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Ok(false)))
            .collect()
    }

    /// Lends one run of blocks held by one tier. Blocks whose read failed because they
    /// moved are left in `retry`.
    fn lend_run(
        &self,
        ids: &[BlockId],
        run: &[(usize, super::Entry)],
        visit: &mut CheckedVisit<'_>,
        results: &mut [Option<Result<bool>>],
        retry: &mut Vec<usize>,
    ) {
        let tier = run[0].1.tier;
        let run_ids: Vec<BlockId> = run.iter().map(|(i, _)| ids[*i]).collect();
        // Which blocks reached the visit: their outcome is the visit's, never a read
        // failure to act on (a visit's error must not get a block dropped).
        let mut lent = vec![false; run.len()];
        let outcomes = self.core.tiers[tier].get_with_batch_checked(&run_ids, &mut |blocks| {
            let mapped: Vec<(usize, &[u8], Option<u64>)> = blocks
                .iter()
                .map(|&(k, bytes, checksum)| {
                    lent[k] = true;
                    (run[k].0, bytes, checksum)
                })
                .collect();
            visit(&mapped)
        });
        for (k, ((i, at), outcome)) in run.iter().zip(outcomes).enumerate() {
            results[*i] = Some(match outcome {
                Ok(()) => {
                    self.core.ledger.hit(tier, &ids[*i]);
                    Ok(true)
                }
                Err(e) if lent[k] => Err(e),
                Err(e) => match self.after_failed_read(ids[*i], *at, e) {
                    Ok(true) => {
                        retry.push(*i);
                        continue;
                    }
                    Ok(false) => {
                        self.core.ledger.miss();
                        Ok(false)
                    }
                    Err(e) => Err(e),
                },
            });
        }
    }

    /// Lends one block at `position` wherever it is now, following it while it moves.
    fn lend_block(
        &self,
        id: BlockId,
        position: usize,
        visit: &mut CheckedVisit<'_>,
    ) -> Result<bool> {
        for _ in 0..GET_ATTEMPTS {
            let Some(at) = self.core.ledger.get(&id) else {
                break;
            };
            let mut lent = false;
            let outcome = self.core.tiers[at.tier].get_with(id, &mut |bytes| {
                lent = true;
                let mut results = vec![Ok(())];
                // A block that moved meanwhile is rare: lent without its checksum.
                apply_checked_visits(visit, &[(position, bytes, None)], &mut results);
                results.pop().unwrap_or(Ok(()))
            });
            match outcome {
                Ok(()) => {
                    self.core.ledger.hit(at.tier, &id);
                    return Ok(true);
                }
                Err(e) if lent => return Err(e),
                Err(e) => {
                    if !self.after_failed_read(id, at, e)? {
                        break;
                    }
                }
            }
        }
        self.core.ledger.miss();
        Ok(false)
    }
}
