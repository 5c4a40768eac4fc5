//! The owner side of the cluster index: for each block this rank owns, its length and
//! the ranks holding it.

use cascade_core::BlockId;
use dashmap::DashMap;

#[derive(Debug, Clone)]
struct Entry {
    len: u64,
    holders: Vec<u32>,
}

/// Blocks this rank owns and who holds them.
#[derive(Default)]
pub(crate) struct Directory {
    map: DashMap<BlockId, Entry>,
}

impl Directory {
    /// Records `rank` as the holder of `id` unless some rank holds it already; returns
    /// whether `rank` should store it.
    pub(crate) fn claim(&self, id: BlockId, len: u64, rank: u32) -> bool {
        let mut entry = self.map.entry(id).or_insert_with(|| Entry {
            len,
            holders: Vec::new(),
        });
        if entry.holders.is_empty() {
            entry.len = len;
            entry.holders.push(rank);
            true
        } else {
            false
        }
    }

    /// Records `rank` as a holder of `id` (a holder stored it, or reopened it).
    pub(crate) fn register(&self, id: BlockId, len: u64, rank: u32) {
        let mut entry = self.map.entry(id).or_insert_with(|| Entry {
            len,
            holders: Vec::new(),
        });
        entry.len = len;
        if !entry.holders.contains(&rank) {
            entry.holders.push(rank);
        }
    }

    /// Forgets `rank` as a holder of `id`, and `id` once nobody holds it.
    pub(crate) fn unregister(&self, id: BlockId, rank: u32) {
        self.map.remove_if_mut(&id, |_, entry| {
            entry.holders.retain(|&r| r != rank);
            entry.holders.is_empty()
        });
    }

    /// The length of `id` and the ranks holding it.
    pub(crate) fn locate(&self, id: BlockId) -> Option<(u64, Vec<u32>)> {
        self.map
            .get(&id)
            .filter(|e| !e.holders.is_empty())
            .map(|e| (e.len, e.holders.clone()))
    }

    /// Blocks this rank owns.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claim_wins_and_others_are_told_it_is_held() {
        let d = Directory::default();
        let id = BlockId::from_u128(9);
        assert!(d.claim(id, 10, 1));
        assert!(!d.claim(id, 10, 2));
        assert_eq!(d.locate(id), Some((10, vec![1])));
        d.register(id, 10, 3);
        d.register(id, 10, 3);
        assert_eq!(d.locate(id), Some((10, vec![1, 3])));
        d.unregister(id, 1);
        d.unregister(id, 3);
        assert_eq!(d.locate(id), None);
        assert_eq!(d.len(), 0);
        assert!(
            d.claim(id, 12, 2),
            "a block nobody holds can be claimed again"
        );
    }
}
