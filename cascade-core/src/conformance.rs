//! The conformance kit: one suite every tier and plugin must pass.
//!
//! Call [`run_all`] from a tier's tests with a function that opens the tier under test.
//! The opener is called several times; each call must open the same tier location
//! (persistent tiers then see what earlier instances wrote; the kit clears the tier
//! before each check). Give the tier a capacity of 4 to 256 MiB; the kit sizes its
//! blocks from the capacity.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

use crate::{BlockId, ErrorKind, Result, Tier};

/// Opens the tier under test.
pub type Opener<'a> = &'a dyn Fn() -> Result<Arc<dyn Tier>>;

/// Runs every check; panics with a message naming the failed check.
pub fn run_all(open: Opener<'_>) {
    round_trip_random_sizes(open);
    replace_keeps_latest(open);
    missing_and_short_buffer(open);
    remove_frees_space(open);
    capacity_exhaustion(open);
    clear_empties(open);
    batch_round_trip(open);
    many_threads(open);
    reopen_keeps_blocks(open);
    refresh_reports_only_others(open);
}

fn fresh(open: Opener<'_>) -> Arc<dyn Tier> {
    let tier = open().expect("the opener failed");
    tier.clear().expect("clear failed");
    assert_eq!(tier.used(), 0, "{}: used() after clear", tier.name());
    tier
}

/// Random bytes of `len`, reproducible from `seed`.
pub fn random_block(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) * 0x9E37_79B9_7F4A_7C15 + 1)
}

fn unit(tier: &dyn Tier) -> usize {
    let cap = tier.capacity().min(tier.capability().max_block_size);
    (cap / 32).clamp(1, 1 << 20) as usize
}

fn read_back(tier: &dyn Tier, id: BlockId, want: &[u8]) {
    let mut out = vec![0xA5u8; want.len() + 7];
    let n = tier
        .get(id, &mut out)
        .unwrap_or_else(|e| panic!("{}: get {id}: {e}", tier.name()));
    assert_eq!(n, want.len(), "{}: length of {id}", tier.name());
    assert!(
        out[..n] == *want,
        "{}: bytes of {id} differ from what was put",
        tier.name()
    );
    assert_eq!(tier.len_of(id), Some(want.len() as u64));
    assert!(tier.contains(id));
}

pub fn round_trip_random_sizes(open: Opener<'_>) {
    let tier = fresh(open);
    let max = unit(&*tier) * 2;
    let mut rng = StdRng::seed_from_u64(1);
    let mut blocks = Vec::new();
    for n in 0..24u64 {
        let len = match n {
            0 => 1,
            1 => 4096,
            2 => max,
            _ => rng.random_range(1..=max),
        };
        let data = random_block(n, len);
        tier.put(id(n), &data)
            .unwrap_or_else(|e| panic!("{}: put {len} bytes: {e}", tier.name()));
        assert!(
            tier.used() <= tier.capacity(),
            "{}: used exceeds capacity",
            tier.name()
        );
        blocks.push((id(n), data));
    }
    for (id, data) in &blocks {
        read_back(&*tier, *id, data);
    }
    let mut listed: Vec<BlockId> = tier.ids().into_iter().map(|(id, _)| id).collect();
    listed.sort();
    let mut want: Vec<BlockId> = blocks.iter().map(|(id, _)| *id).collect();
    want.sort();
    assert_eq!(listed, want, "{}: ids() lists what was put", tier.name());
    let mut seen = Vec::new();
    let (first, data) = &blocks[3];
    tier.get_with(*first, &mut |bytes| {
        seen.extend_from_slice(bytes);
        Ok(())
    })
    .unwrap();
    assert!(seen == *data, "{}: get_with bytes", tier.name());
}

pub fn replace_keeps_latest(open: Opener<'_>) {
    let tier = fresh(open);
    let len = unit(&*tier);
    tier.put(id(1), &random_block(10, len)).unwrap();
    let newer = random_block(11, len / 2 + 1);
    tier.put(id(1), &newer).unwrap();
    read_back(&*tier, id(1), &newer);
    assert_eq!(
        tier.ids().len(),
        1,
        "{}: a replaced block is listed once",
        tier.name()
    );
}

pub fn missing_and_short_buffer(open: Opener<'_>) {
    let tier = fresh(open);
    let mut out = vec![0u8; 16];
    let err = tier
        .get(id(99), &mut out)
        .expect_err("get of a missing id must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: {err}", tier.name());
    assert!(!tier.contains(id(99)));
    tier.put(id(2), &random_block(2, 4096)).unwrap();
    let mut short = vec![0u8; 100];
    let err = tier
        .get(id(2), &mut short)
        .expect_err("a short buffer must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "{}: {err}",
        tier.name()
    );
    read_back(&*tier, id(2), &random_block(2, 4096));
}

pub fn remove_frees_space(open: Opener<'_>) {
    let tier = fresh(open);
    let data = random_block(3, unit(&*tier));
    tier.put(id(3), &data).unwrap();
    let used = tier.used();
    assert!(
        used >= data.len() as u64,
        "{}: used counts the block",
        tier.name()
    );
    assert!(tier.remove(id(3)).unwrap());
    assert!(
        !tier.remove(id(3)).unwrap(),
        "{}: second remove",
        tier.name()
    );
    assert!(!tier.contains(id(3)));
    assert!(tier.used() < used, "{}: remove frees space", tier.name());
    let err = tier
        .get(id(3), &mut vec![0u8; data.len()])
        .expect_err("removed");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

pub fn capacity_exhaustion(open: Opener<'_>) {
    let tier = fresh(open);
    let len = unit(&*tier);
    let mut stored = Vec::new();
    let mut full = false;
    for n in 0..(tier.capacity() / len as u64 + 64) {
        let data = random_block(1000 + n, len);
        match tier.put(id(1000 + n), &data) {
            Ok(()) => stored.push((id(1000 + n), data)),
            Err(e) if e.kind() == ErrorKind::TierFull => {
                full = true;
                break;
            }
            Err(e) => panic!("{}: put while filling: {e}", tier.name()),
        }
        assert!(
            tier.used() <= tier.capacity(),
            "{}: used {} > capacity {}",
            tier.name(),
            tier.used(),
            tier.capacity()
        );
    }
    assert!(
        full,
        "{}: filling past capacity must answer TierFull",
        tier.name()
    );
    for (id, data) in &stored {
        read_back(&*tier, *id, data);
    }
    let huge = vec![0u8; (tier.capability().max_block_size.min(tier.capacity()) + 1) as usize];
    let err = tier
        .put(id(5000), &huge)
        .expect_err("a block larger than the tier");
    assert!(
        matches!(err.kind(), ErrorKind::TooLarge),
        "{}: a block larger than capacity gives TooLarge, got {err}",
        tier.name()
    );
    let (victim, _) = stored[0].clone();
    assert!(tier.remove(victim).unwrap());
    tier.put(id(6000), &random_block(6000, len))
        .unwrap_or_else(|e| panic!("{}: put after remove: {e}", tier.name()));
    for (id, data) in &stored[1..] {
        read_back(&*tier, *id, data);
    }
}

pub fn clear_empties(open: Opener<'_>) {
    let tier = fresh(open);
    for n in 0..8 {
        tier.put(id(n), &random_block(n, 4096)).unwrap();
    }
    tier.clear().unwrap();
    assert_eq!(tier.used(), 0);
    assert!(tier.ids().is_empty());
    assert!(!tier.contains(id(0)));
}

pub fn batch_round_trip(open: Opener<'_>) {
    let tier = fresh(open);
    let len = unit(&*tier) / 2 + 3;
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..16)
        .map(|n| (id(200 + n), random_block(200 + n, len)))
        .collect();
    let items: Vec<(BlockId, &[u8])> = blocks.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    for result in tier.put_batch(&items) {
        result.unwrap();
    }
    let mut outs: Vec<Vec<u8>> = blocks.iter().map(|_| vec![0x5Au8; len]).collect();
    let mut requests: Vec<(BlockId, &mut [u8])> = blocks
        .iter()
        .zip(outs.iter_mut())
        .map(|((id, _), out)| (*id, out.as_mut_slice()))
        .collect();
    for result in tier.get_batch(&mut requests) {
        assert_eq!(result.unwrap(), len);
    }
    for ((_, data), out) in blocks.iter().zip(&outs) {
        assert!(data == out, "{}: batch bytes differ", tier.name());
    }
}

pub fn many_threads(open: Opener<'_>) {
    let tier = fresh(open);
    let len = (unit(&*tier) / 4).max(1);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let tier = Arc::clone(&tier);
            scope.spawn(move || {
                for round in 0..12u64 {
                    let n = 10_000 + t * 100 + round;
                    let data = random_block(n, len + round as usize);
                    tier.put(id(n), &data)
                        .unwrap_or_else(|e| panic!("{}: thread put: {e}", tier.name()));
                    read_back(&*tier, id(n), &data);
                    assert!(tier.used() <= tier.capacity());
                    if round % 3 == 0 {
                        assert!(tier.remove(id(n)).unwrap());
                    }
                }
            });
        }
    });
    assert_eq!(
        tier.ids().len(),
        8 * 8,
        "{}: blocks left after threads",
        tier.name()
    );
}

pub fn reopen_keeps_blocks(open: Opener<'_>) {
    let tier = fresh(open);
    if !tier.capability().persistent {
        return;
    }
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..10)
        .map(|n| {
            (
                id(300 + n),
                random_block(300 + n, 4096 * (n as usize + 1) + 5),
            )
        })
        .collect();
    for (id, data) in &blocks {
        tier.put(*id, data).unwrap();
    }
    tier.remove(blocks[0].0).unwrap();
    tier.flush().unwrap();
    drop(tier);
    let reopened = open().expect("reopen failed");
    assert!(
        !reopened.contains(blocks[0].0),
        "{}: a removed block came back after reopen",
        reopened.name()
    );
    for (id, data) in &blocks[1..] {
        read_back(&*reopened, *id, data);
    }
    assert_eq!(reopened.ids().len(), blocks.len() - 1);
    reopened.clear().unwrap();
}

/// A tier that no other process shares has nothing to refresh: its own puts, replaces
/// and removes are never reported, and its blocks stay as they were.
pub fn refresh_reports_only_others(open: Opener<'_>) {
    let tier = fresh(open);
    let len = unit(&*tier);
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..4)
        .map(|n| (id(400 + n), random_block(400 + n, len / 2 + n as usize)))
        .collect();
    for (id, data) in &blocks {
        tier.put(*id, data).unwrap();
    }
    let newer = random_block(499, len / 3);
    tier.put(blocks[1].0, &newer).unwrap();
    assert!(tier.remove(blocks[0].0).unwrap());
    let found = tier.refresh().unwrap();
    assert_eq!(
        found,
        crate::TierRefresh::default(),
        "{}: refresh reported the tier's own changes",
        tier.name()
    );
    assert!(
        !tier.contains(blocks[0].0),
        "{}: removed block back",
        tier.name()
    );
    read_back(&*tier, blocks[1].0, &newer);
    for (id, data) in &blocks[2..] {
        read_back(&*tier, *id, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryTier, MemoryTierConfig, config::ByteSize};

    #[test]
    fn memory_tier_passes_the_kit() {
        run_all(&|| {
            let config = MemoryTierConfig {
                capacity: ByteSize::mib(8),
                prefault: false,
            };
            Ok(Arc::new(MemoryTier::open("memory0", &config)?) as Arc<dyn Tier>)
        });
    }
}
