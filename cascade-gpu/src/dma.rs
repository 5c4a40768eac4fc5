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

impl DmaCopy {
    /// `len` bytes between a host-side address (`near`) and a device-side one (`far`):
    /// far to near when `to_near`, near to far otherwise.
    pub fn toward(to_near: bool, near: u64, far: u64, len: usize) -> Self {
        if to_near {
            Self {
                dst: near,
                src: far,
                len,
            }
        } else {
            Self {
                dst: far,
                src: near,
                len,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toward_orients_the_copy() {
        let to_near = DmaCopy::toward(true, 1, 2, 3);
        assert_eq!((to_near.dst, to_near.src, to_near.len), (1, 2, 3));
        let to_far = DmaCopy::toward(false, 1, 2, 3);
        assert_eq!((to_far.dst, to_far.src, to_far.len), (2, 1, 3));
    }
}
