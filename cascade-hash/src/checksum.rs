//! The per-block integrity checksum shared by the tiers that keep one.

use cascade_core::{Error, ErrorKind, Result};

use twox_hash::XxHash3_64;

/// The per-block integrity checksum the persistent tiers store and verify: xxh3-64.
///
/// Computed with twox-hash, which picks its AVX2 kernel at run time (faster here than the
/// SSE2 kernel a portable build of xxhash-rust uses; both give the same value, the
/// standard XXH3-64 with seed 0).
///
/// Chosen for speed: it runs faster than a memcpy, so it costs a few percent of a disk
/// write; against an in-memory put it is a large share (docs/benchmarks.md, "Hashing
/// (cascade-hash)"). It detects torn writes and bit rot, not tampering; content ids use
/// SHA-256 or BLAKE3.
pub fn checksum(data: &[u8]) -> u64 {
    XxHash3_64::oneshot(data)
}

/// Copies `src` into the start of `dst` and returns `checksum(src)`: what a tier that
/// stores checksums does on every put (use it inside `Tier::put_with` fill closures).
///
/// Two passes, hash then copy: a 128 KiB block is still in L2 for the copy. A fused
/// single pass (copy 4 KiB, hash it from L1 with a streaming xxh3, repeat) was
/// measured: slower at 128 KiB, no faster at 2 MiB (docs/benchmarks.md, "Hashing
/// (cascade-hash)").
///
/// Errors: [`ErrorKind::InvalidInput`] when `dst` is shorter than `src` (nothing is
/// copied).
pub fn copy_with_checksum(src: &[u8], dst: &mut [u8]) -> Result<u64> {
    let Some(dst) = dst.get_mut(..src.len()) else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "destination shorter than the block to copy",
        )
        .with_context("block_bytes", src.len())
        .with_context("buffer_bytes", dst.len()));
    };
    let sum = checksum(src);
    dst.copy_from_slice(src);
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_with_checksum_gives_the_same_checksum_and_bytes() {
        let source: Vec<u8> = (0..(128 * 1024 + 3) as u32)
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        for len in [
            0,
            1,
            16,
            17,
            128,
            129,
            240,
            241,
            1024,
            4095,
            4096,
            4097,
            source.len(),
        ] {
            let src = &source[..len];
            let mut dst = vec![0xEEu8; len + 5];
            assert_eq!(
                copy_with_checksum(src, &mut dst).unwrap(),
                checksum(src),
                "len {len}"
            );
            assert_eq!(&dst[..len], src, "len {len}");
            assert!(
                dst[len..].iter().all(|&b| b == 0xEE),
                "len {len}: wrote past the block"
            );
        }
    }

    #[test]
    fn copy_into_a_short_buffer_is_invalid_input() {
        let mut dst = vec![7u8; 10];
        let err = copy_with_checksum(&[1u8; 11], &mut dst).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(dst, vec![7u8; 10]);
    }

    // XXH3_64bits with seed 0, cross-checked against the xxHash C library; the long
    // inputs take the striped path that real blocks take.
    #[test]
    fn known_answers() {
        assert_eq!(checksum(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(checksum(b"abc"), 0x78af_5f94_892f_3950);
        assert_eq!(checksum(&vec![b'a'; 1_000_000]), 0xb1fd_6fae_5285_c4eb);
        let pattern: Vec<u8> = (0..128 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(checksum(&pattern), 0xcdca_cb62_ee88_1022);
    }

    #[test]
    fn one_flipped_bit_changes_the_checksum() {
        let mut block = vec![0x5au8; 128 * 1024];
        let before = checksum(&block);
        block[77_777] ^= 0x10;
        assert_ne!(checksum(&block), before);
    }
}
