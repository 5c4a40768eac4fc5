//! [`Slot`]: a block's extent in the device slab, freed when its last holder lets go, so
//! a read in flight keeps the bytes it copies from even across a remove or replace.

use std::sync::Arc;

use cascade_core::{Extent, ExtentAllocator};

/// A block's extent in the slab; frees it when the last holder lets go.
pub(crate) struct Slot {
    pub(crate) extent: Extent,
    pub(crate) len: usize,
    pub(crate) allocator: Arc<ExtentAllocator>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.allocator.free(self.extent);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn slots_free_their_extent_when_the_last_holder_drops() {
        let allocator = Arc::new(ExtentAllocator::new(1 << 20, crate::tier::ALIGNMENT));
        let slot = Arc::new(Slot {
            extent: allocator.allocate(1000).unwrap(),
            len: 1000,
            allocator: Arc::clone(&allocator),
        });
        assert_eq!(allocator.used(), 1024);
        let reader = Arc::clone(&slot);
        drop(slot);
        assert_eq!(allocator.used(), 1024, "a read in flight keeps the extent");
        drop(reader);
        assert_eq!(allocator.used(), 0);
    }
}
