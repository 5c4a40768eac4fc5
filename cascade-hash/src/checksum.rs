//! The per-block integrity checksum shared by every tier.

/// The per-block integrity checksum every tier stores and verifies: xxh3-64.
///
/// Chosen for speed: xxh3 runs near memory bandwidth (see docs/benchmarks.md, "Hashing
/// (cascade-hash)"), so verifying a block costs a small fraction of copying it. It
/// detects torn writes and bit rot, not tampering; content ids use SHA-256 or BLAKE3.
pub fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

#[cfg(test)]
mod tests {
    use super::*;

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
