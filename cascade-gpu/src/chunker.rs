//! The staging chunker: staged items cut into staging-buffer-sized chunks, items that
//! straddle a buffer boundary split across two.

use std::sync::Arc;

use crate::route::Side;
use crate::slot::Slot;

/// One piece of a chunk: `len` bytes at `item_offset` of staged item `item`, placed at
/// `buffer_offset` in the staging buffer.
pub(crate) struct Piece {
    pub(crate) item: usize,
    pub(crate) item_offset: usize,
    pub(crate) buffer_offset: usize,
    pub(crate) len: usize,
}

/// Cuts staged items into staging-buffer-sized chunks, splitting items that straddle a
/// buffer boundary.
pub(crate) struct Chunker<'a> {
    pub(crate) items: &'a [(usize, Side, Arc<Slot>)],
    pub(crate) capacity: usize,
    pub(crate) next: usize,
    pub(crate) offset: usize,
}

impl<'a> Chunker<'a> {
    pub(crate) fn new(items: &'a [(usize, Side, Arc<Slot>)], capacity: usize) -> Self {
        Self {
            items,
            capacity,
            next: 0,
            offset: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.next >= self.items.len()
    }

    /// The pieces of the next chunk, and the items whose last piece is among them.
    pub(crate) fn next_chunk(&mut self) -> (Vec<Piece>, Vec<usize>) {
        let (mut pieces, mut completed) = (Vec::new(), Vec::new());
        let mut used = 0;
        while used < self.capacity && !self.is_empty() {
            let len = self.items[self.next].2.len;
            let take = (len - self.offset).min(self.capacity - used);
            if take > 0 {
                pieces.push(Piece {
                    item: self.next,
                    item_offset: self.offset,
                    buffer_offset: used,
                    len: take,
                });
            }
            used += take;
            self.offset += take;
            if self.offset == len {
                completed.push(self.next);
                self.next += 1;
                self.offset = 0;
            }
        }
        (pieces, completed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use cascade_core::ExtentAllocator;

    fn staged(lens: &[usize]) -> Vec<(usize, Side, Arc<Slot>)> {
        let allocator = Arc::new(ExtentAllocator::new(1 << 20, crate::tier::ALIGNMENT));
        lens.iter()
            .enumerate()
            .map(|(i, &len)| {
                let extent = allocator.allocate(len as u64).unwrap();
                let slot = Arc::new(Slot {
                    extent,
                    len,
                    allocator: Arc::clone(&allocator),
                });
                (
                    i * 10,
                    Side::Host {
                        ptr: 4096 * (i + 1),
                        len,
                    },
                    slot,
                )
            })
            .collect()
    }

    #[test]
    fn chunker_covers_every_byte_once_and_completes_items_in_order() {
        let items = staged(&[3, 10, 0, 5, 4]);
        let mut chunker = Chunker::new(&items, 4);
        let mut covered = vec![Vec::new(); items.len()];
        let mut completed = Vec::new();
        while !chunker.is_empty() {
            let (pieces, done) = chunker.next_chunk();
            let mut end = 0;
            for p in &pieces {
                assert_eq!(p.buffer_offset, end, "pieces are packed");
                end += p.len;
                covered[p.item].push((p.item_offset, p.len));
            }
            assert!(end <= 4);
            completed.extend(done);
        }
        assert_eq!(completed, vec![0, 1, 2, 3, 4]);
        for (k, (_, side, _)) in items.iter().enumerate() {
            let mut next = 0;
            for &(offset, len) in &covered[k] {
                assert_eq!(offset, next);
                next += len;
            }
            assert_eq!(next, side.len());
        }
    }
}
