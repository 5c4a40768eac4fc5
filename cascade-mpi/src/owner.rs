//! Which rank owns a block: rendezvous (highest-random-weight) hashing of the id over the
//! ranks. Every rank computes the same owner with no shared table, and a job started
//! again with the same number of ranks maps every id to the same owner.

use cascade_core::BlockId;

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The owner of `id` among `ranks` ranks (0 when `ranks` is 0 or 1).
pub fn owner_of(id: BlockId, ranks: usize) -> usize {
    let value = id.as_u128();
    let key = mix((value as u64) ^ mix((value >> 64) as u64));
    (0..ranks)
        .max_by_key(|&rank| mix(key ^ mix(rank as u64 + 1)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_evenly_and_stay_stable() {
        let ranks = 4;
        let mut counts = [0usize; 4];
        for i in 0..40_000u128 {
            let id = BlockId::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
            let owner = owner_of(id, ranks);
            assert_eq!(owner, owner_of(id, ranks));
            counts[owner] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_rank_moves_only_the_ids_it_takes() {
        for i in 0..10_000u128 {
            let id = BlockId::from_u128(i << 64 | i);
            let before = owner_of(id, 3);
            let after = owner_of(id, 4);
            assert!(after == before || after == 3, "id {i}: {before} -> {after}");
        }
        assert_eq!(owner_of(BlockId::from_u128(5), 1), 0);
    }
}
