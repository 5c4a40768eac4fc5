//! [`DmaCopy`]: one copy between unified virtual addresses, the unit the copy engine
//! batches and the copy kernel takes; a plain value, so neither depends on the other.

/// One DMA: `len` bytes from `src` to `dst`, both unified virtual addresses (device
/// memory, pinned or registered host memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaCopy {
    /// Destination address.
    pub dst: u64,
    /// Source address.
    pub src: u64,
    /// Bytes.
    pub len: usize,
}
