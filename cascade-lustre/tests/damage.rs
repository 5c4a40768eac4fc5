//! Bit flips and truncations of segment files: the parser never panics, undamaged
//! records are still found, and a damaged block is never served with wrong bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::path::Path;

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_hash::checksum;
use cascade_lustre::format::{
    self, HEADER_LEN, PAGE, RecordHeader, RecordMeta, SegmentHeader, TRAILER_LEN, record_span,
};
use cascade_lustre::{FileTier, FileTierConfig, IoEngine};
use proptest::prelude::*;

const NONCE: u64 = 0x5EED_F00D;

/// A segment image with the given payload lengths; sealed ones end with a footer.
fn segment_image(lens: &[usize], sealed: bool) -> (Vec<u8>, Vec<RecordMeta>) {
    let mut bytes = SegmentHeader {
        nonce: NONCE,
        number: 0,
        writer: "w".into(),
    }
    .encode();
    let mut records = Vec::new();
    for (n, &len) in lens.iter().enumerate() {
        let payload = random_block(n as u64, len);
        let meta = RecordMeta {
            id: BlockId::from_u128(n as u128 + 1),
            seq: n as u64 + 1,
            offset: bytes.len() as u64,
            len: len as u64,
            checksum: checksum(&payload),
        };
        let header = RecordHeader {
            id: meta.id,
            seq: meta.seq,
            len: meta.len,
            checksum: meta.checksum,
        };
        bytes.extend_from_slice(&header.encode(NONCE));
        bytes.extend_from_slice(&payload);
        bytes.resize((meta.offset + record_span(meta.len)) as usize, 0);
        records.push(meta);
    }
    if sealed {
        let data_end = bytes.len() as u64;
        bytes.extend_from_slice(&format::encode_footer(&records, NONCE, data_end));
    }
    (bytes, records)
}

/// Records that a parse of `bytes` yields: the footer's when valid, else a scan's.
fn parse(bytes: &[u8]) -> Vec<RecordMeta> {
    let len = bytes.len() as u64;
    if len >= 2 * PAGE && len % PAGE == 0 {
        if let Ok(trailer) = format::decode_trailer(&bytes[bytes.len() - TRAILER_LEN..], NONCE, len)
        {
            let start = trailer.data_end as usize;
            if let Ok(records) = format::decode_entries(&bytes[start..], &trailer) {
                return records;
            }
        }
    }
    format::scan_records(bytes, NONCE)
        .expect("memory reads do not fail")
        .records
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn flips_lose_only_the_records_they_touch(
        lens in prop::collection::vec(0usize..20_000, 1..12),
        sealed in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let (mut bytes, records) = segment_image(&lens, sealed);
        let mut touched = Vec::new();
        for (at, bit) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            touched.push(at as u64);
        }
        let found = parse(&bytes);
        for rec in &found {
            // Nothing invented: every record found is one that was written (its header
            // intact), whatever its payload now holds.
            prop_assert!(records.contains(rec), "unknown record {rec:?}");
        }
        for rec in &records {
            let header_hit = touched.iter().any(|&t| t >= rec.offset && t < rec.offset + HEADER_LEN as u64);
            if !header_hit {
                prop_assert!(found.contains(rec), "intact record {rec:?} lost");
            }
        }
    }

    #[test]
    fn truncation_keeps_every_whole_record_before_the_cut(
        lens in prop::collection::vec(0usize..20_000, 1..12),
        sealed in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (bytes, records) = segment_image(&lens, sealed);
        let cut = cut.index(bytes.len());
        let found = parse(&bytes[..cut]);
        let whole: Vec<RecordMeta> = records.iter().copied().filter(|r| r.end() <= cut as u64).collect();
        prop_assert_eq!(found, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..20_000)) {
        let _ = parse(&bytes);
        let _ = SegmentHeader::decode(&bytes);
        let _ = RecordHeader::decode(&bytes, None);
    }
}

fn config(dir: &Path, engine: IoEngine) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.io_engine = engine;
    config.capacity = ByteSize::mib(64);
    config.segment_size = ByteSize::mib(1);
    config.writer_id = Some("w".into());
    config
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) + 1)
}

fn fill(dir: &Path, count: u64, engine: IoEngine) -> Vec<Vec<u8>> {
    let tier = FileTier::open("file0", &config(dir, engine)).unwrap();
    let blocks: Vec<Vec<u8>> = (0..count)
        .map(|n| random_block(n, 30_000 + n as usize))
        .collect();
    for (n, data) in blocks.iter().enumerate() {
        tier.put(id(n as u64), data).unwrap();
    }
    blocks
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

/// Every block either reads back exactly or is reported missing or corrupt, and a
/// corrupt one is gone afterwards.
fn check_never_wrong(tier: &FileTier, blocks: &[Vec<u8>]) -> (usize, usize) {
    let mut good = 0;
    let mut corrupt = 0;
    let mut out = vec![0u8; 64 * 1024];
    for (n, data) in blocks.iter().enumerate() {
        match tier.get(id(n as u64), &mut out) {
            Ok(len) => {
                assert!(out[..len] == data[..], "block {n} served with wrong bytes");
                good += 1;
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                assert!(
                    out.iter().all(|&b| b == 0),
                    "bytes of a corrupt block were left in the buffer"
                );
                assert!(!tier.contains(id(n as u64)), "a corrupt block is dropped");
                corrupt += 1;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("block {n}: unexpected {e}"),
        }
    }
    (good, corrupt)
}

per_engine!(
    a_flipped_payload_bit_is_reported_corrupt_and_dropped_for_good,
    a_damaged_batch_read_fails_only_the_damaged_block,
    a_damaged_direct_io_batch_read_fails_only_the_damaged_block,
    random_flips_and_truncations_of_real_segments_never_serve_wrong_bytes,
);

fn a_flipped_payload_bit_is_reported_corrupt_and_dropped_for_good(engine: IoEngine) {
    let dir = tempfile::tempdir().unwrap();
    let blocks = fill(dir.path(), 40, engine);
    let first = &segments(dir.path())[0];
    let mut bytes = std::fs::read(first).unwrap();
    // The first record's payload starts right after its header on page 1.
    bytes[PAGE as usize + HEADER_LEN + 100] ^= 0x10;
    std::fs::write(first, &bytes).unwrap();
    {
        let tier = FileTier::open("file0", &config(dir.path(), engine)).unwrap();
        let (good, corrupt) = check_never_wrong(&tier, &blocks);
        assert_eq!((good, corrupt), (39, 1));
        let mut out = vec![0u8; 64 * 1024];
        assert_eq!(
            tier.get(id(0), &mut out).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        tier.flush().unwrap();
    }
    let tier = FileTier::open("file0", &config(dir.path(), engine)).unwrap();
    assert!(
        !tier.contains(id(0)),
        "a dropped corrupt block stays dropped after reopen"
    );
    assert_eq!(tier.ids().len(), 39);
}

fn a_damaged_batch_read_fails_only_the_damaged_block(engine: IoEngine) {
    damaged_batch(false, engine);
}

fn a_damaged_direct_io_batch_read_fails_only_the_damaged_block(engine: IoEngine) {
    damaged_batch(true, engine);
}

fn damaged_batch(direct: bool, engine: IoEngine) {
    let dir = tempfile::tempdir().unwrap();
    let blocks = fill(dir.path(), 20, engine);
    let first = &segments(dir.path())[0];
    let mut bytes = std::fs::read(first).unwrap();
    let second_record = PAGE + record_span(blocks[0].len() as u64);
    bytes[second_record as usize + HEADER_LEN + 7] ^= 1;
    std::fs::write(first, &bytes).unwrap();
    let mut config = config(dir.path(), engine);
    config.direct_io = direct;
    let tier = FileTier::open("file0", &config).unwrap();
    let mut outs: Vec<Vec<u8>> = blocks.iter().map(|b| vec![0u8; b.len()]).collect();
    let mut items: Vec<(BlockId, &mut [u8])> = outs
        .iter_mut()
        .enumerate()
        .map(|(n, o)| (id(n as u64), o.as_mut_slice()))
        .collect();
    let results = tier.get_batch(&mut items);
    for (n, result) in results.iter().enumerate() {
        match result {
            Ok(len) => assert!(outs[n][..*len] == blocks[n][..], "block {n}"),
            Err(e) => {
                assert_eq!(n, 1, "only block 1 was damaged: {e}");
                assert_eq!(e.kind(), ErrorKind::Corrupt);
            }
        }
    }
    assert!(results[1].is_err());
    assert!(!tier.contains(id(1)), "the corrupt block is dropped");
}

fn random_flips_and_truncations_of_real_segments_never_serve_wrong_bytes(engine: IoEngine) {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let blocks = fill(dir.path(), 60, engine);
        let paths = segments(dir.path());
        for path in &paths {
            let mut bytes = std::fs::read(path).unwrap();
            if round % 3 == 2 {
                let cut = rng.random_range(0..bytes.len());
                bytes.truncate(cut);
            } else {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
            }
            std::fs::write(path, &bytes).unwrap();
        }
        let tier = FileTier::open("file0", &config(dir.path(), engine)).unwrap();
        let (good, _) = check_never_wrong(&tier, &blocks);
        assert!(
            good > 0,
            "round {round}: damage to a few bytes keeps most blocks"
        );
    }
}
