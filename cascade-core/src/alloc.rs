//! An extent allocator for variable-size blocks inside one fixed region (a shm pool, a
//! GPU slab, an anonymous heap region).
//!
//! Best fit over free extents kept in two ordered maps (by size and by offset), with
//! neighbours merged on free. Every allocation is rounded up to the alignment, and the
//! rounded size is what counts as used, so capacity accounting is exact.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

/// A run of bytes inside the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extent {
    /// Offset from the start of the region.
    pub offset: u64,
    /// Length in bytes (already rounded to the alignment).
    pub len: u64,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

#[derive(Debug)]
struct FreeSpace {
    by_offset: BTreeMap<u64, u64>,
    by_size: BTreeSet<(u64, u64)>,
    used: u64,
}

impl FreeSpace {
    fn insert(&mut self, offset: u64, len: u64) {
        self.by_offset.insert(offset, len);
        self.by_size.insert((len, offset));
    }

    fn take(&mut self, offset: u64, len: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(len, offset));
    }
}

/// Thread-safe best-fit allocator over `[0, capacity)`.
#[derive(Debug)]
pub struct ExtentAllocator {
    capacity: u64,
    alignment: u64,
    free: Mutex<FreeSpace>,
}

impl ExtentAllocator {
    /// An allocator over `capacity` bytes handing out multiples of `alignment` (a power
    /// of two). The usable capacity is `capacity` rounded down to the alignment.
    pub fn new(capacity: u64, alignment: u64) -> Self {
        let alignment = alignment.max(1).next_power_of_two();
        let capacity = capacity - capacity % alignment;
        let mut free = FreeSpace {
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
            used: 0,
        };
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self {
            capacity,
            alignment,
            free: Mutex::new(free),
        }
    }

    /// Rebuilds an allocator from extents known to be in use (after a restart).
    ///
    /// Returns `None` when the extents overlap or run past the capacity.
    pub fn with_allocated(capacity: u64, alignment: u64, allocated: &[Extent]) -> Option<Self> {
        let this = Self::new(capacity, alignment);
        let mut sorted: Vec<Extent> = allocated.to_vec();
        sorted.sort();
        {
            let mut free = this.free.lock();
            free.by_offset.clear();
            free.by_size.clear();
            let mut cursor = 0u64;
            for extent in &sorted {
                if extent.offset < cursor || extent.end() > this.capacity {
                    return None;
                }
                if extent.offset > cursor {
                    free.insert(cursor, extent.offset - cursor);
                }
                cursor = extent.end();
                free.used += extent.len;
            }
            if cursor < this.capacity {
                free.insert(cursor, this.capacity - cursor);
            }
        }
        Some(this)
    }

    /// The managed capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The alignment every extent is rounded to.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// What `len` bytes occupy once rounded.
    pub fn rounded(&self, len: u64) -> u64 {
        len.max(1).div_ceil(self.alignment) * self.alignment
    }

    /// Bytes handed out.
    pub fn used(&self) -> u64 {
        self.free.lock().used
    }

    /// Allocates room for `len` bytes; `None` when no free extent is large enough.
    pub fn allocate(&self, len: u64) -> Option<Extent> {
        let need = self.rounded(len);
        let mut free = self.free.lock();
        let &(size, offset) = free.by_size.range((need, 0)..).next()?;
        free.take(offset, size);
        if size > need {
            free.insert(offset + need, size - need);
        }
        free.used += need;
        Some(Extent { offset, len: need })
    }

    /// Returns an extent; merges it with free neighbours.
    pub fn free(&self, extent: Extent) {
        let mut free = self.free.lock();
        let mut offset = extent.offset;
        let mut len = extent.len;
        if let Some((&prev_off, &prev_len)) = free.by_offset.range(..offset).next_back() {
            if prev_off + prev_len == offset {
                free.take(prev_off, prev_len);
                offset = prev_off;
                len += prev_len;
            }
        }
        if let Some(&next_len) = free.by_offset.get(&(extent.end())) {
            free.take(extent.end(), next_len);
            len += next_len;
        }
        free.insert(offset, len);
        free.used = free.used.saturating_sub(extent.len);
    }

    /// Frees everything.
    pub fn reset(&self) {
        let mut free = self.free.lock();
        free.by_offset.clear();
        free.by_size.clear();
        free.used = 0;
        if self.capacity > 0 {
            free.insert(0, self.capacity);
        }
    }

    /// The largest extent that could be allocated now.
    pub fn largest_free(&self) -> u64 {
        self.free
            .lock()
            .by_size
            .iter()
            .next_back()
            .map_or(0, |&(len, _)| len)
    }

    /// External fragmentation in `[0, 1]`: 1 - largest free extent / all free bytes.
    /// Zero when the free space is one run (or there is none).
    pub fn fragmentation(&self) -> f64 {
        let free = self.free.lock();
        let total = self.capacity - free.used;
        let largest = free.by_size.iter().next_back().map_or(0, |&(len, _)| len);
        if total == 0 {
            0.0
        } else {
            1.0 - largest as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_rounded_and_counts_exactly() {
        let alloc = ExtentAllocator::new(1 << 20, 4096);
        let a = alloc.allocate(1);
        assert_eq!(
            a,
            Some(Extent {
                offset: 0,
                len: 4096
            })
        );
        let b = alloc.allocate(4097);
        assert_eq!(b.map(|e| e.len), Some(8192));
        assert_eq!(alloc.used(), 12288);
    }

    #[test]
    fn refuses_when_full_and_reuses_after_free() {
        let alloc = ExtentAllocator::new(4 * 4096, 4096);
        let extents: Vec<Extent> = (0..4).filter_map(|_| alloc.allocate(4096)).collect();
        assert_eq!(extents.len(), 4);
        assert_eq!(alloc.allocate(1), None);
        assert_eq!(alloc.used(), alloc.capacity());
        alloc.free(extents[1]);
        alloc.free(extents[2]);
        assert_eq!(alloc.fragmentation(), 0.0);
        assert_eq!(alloc.allocate(8192).map(|e| e.offset), Some(4096));
    }

    #[test]
    fn fragmentation_reports_split_free_space() {
        let alloc = ExtentAllocator::new(4 * 4096, 4096);
        let extents: Vec<Extent> = (0..4).filter_map(|_| alloc.allocate(4096)).collect();
        alloc.free(extents[0]);
        alloc.free(extents[2]);
        assert!((alloc.fragmentation() - 0.5).abs() < 1e-9);
        assert_eq!(alloc.allocate(8192), None);
        alloc.free(extents[1]);
        assert_eq!(alloc.fragmentation(), 0.0);
        assert_eq!(alloc.largest_free(), 3 * 4096);
    }

    #[test]
    fn rebuild_from_allocated_extents() {
        let used = [
            Extent {
                offset: 4096,
                len: 4096,
            },
            Extent {
                offset: 12288,
                len: 8192,
            },
        ];
        let alloc = ExtentAllocator::with_allocated(8 * 4096, 4096, &used);
        let alloc = alloc.expect("valid layout");
        assert_eq!(alloc.used(), 12288);
        assert_eq!(alloc.allocate(4096).map(|e| e.offset), Some(0));
        let overlapping = [
            Extent {
                offset: 0,
                len: 8192,
            },
            Extent {
                offset: 4096,
                len: 4096,
            },
        ];
        assert!(ExtentAllocator::with_allocated(8 * 4096, 4096, &overlapping).is_none());
    }
}
