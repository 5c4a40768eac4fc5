//! `FileTier::verify` finds exactly the damaged blocks, reads every block once, and
//! neither serves nor drops anything; `written_at` tells when a block was written.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_lustre::{FileTier, FileTierConfig};

fn config(dir: &std::path::Path, direct: bool) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(64);
    config.segment_size = ByteSize::mib(2);
    config.writer_id = Some("verify".into());
    config.direct_io = direct;
    config
}

fn block(n: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ n.wrapping_mul(0x9E37)) as u8)
        .collect()
}

fn check(direct: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), direct)).unwrap();
    let before = SystemTime::now() - Duration::from_secs(1);
    let sizes = [1usize, 4096, 100_000, 128 << 10, 300_000];
    let mut total = 0u64;
    for n in 0..60u64 {
        let len = sizes[n as usize % sizes.len()];
        tier.put(BlockId::from_u128(n.into()), &block(n, len))
            .unwrap();
        total += len as u64;
    }
    // Dead records between live ones are read through or skipped, never reported.
    for n in (0..60u64).step_by(7) {
        tier.remove(BlockId::from_u128(n.into())).unwrap();
        total -= sizes[n as usize % sizes.len()] as u64;
    }
    tier.flush().unwrap();
    let clean = tier.verify(&|_| {}).unwrap();
    assert_eq!(clean.blocks, tier.ids().len() as u64);
    assert_eq!(clean.bytes, total);
    assert!(clean.damaged.is_empty(), "{:?}", clean.damaged);

    // Damage the payload of one block and the header of another.
    let payload_hit = BlockId::from_u128(12);
    let header_hit = BlockId::from_u128(23);
    for (id, at) in [(payload_hit, 64 + 50), (header_hit, 20)] {
        let (path, offset) = tier.location(id).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xAB, 0xCD], offset + at).unwrap();
    }
    tier.drop_page_cache().unwrap();
    let seen = AtomicU64::new(0);
    let report = tier
        .verify(&|bytes| {
            seen.fetch_add(bytes, Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        total,
        "progress covers every byte"
    );
    let mut found: Vec<(BlockId, &str)> = report.damaged.iter().map(|d| (d.id, d.reason)).collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (payload_hit, "checksum mismatch"),
            (header_hit, "record header damaged")
        ]
    );
    assert!(tier.contains(payload_hit), "verify does not drop");
    let mut out = vec![0u8; 1 << 20];
    let err = tier.get(payload_hit, &mut out).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Corrupt,
        "and a read still refuses it"
    );

    let written = tier.written_at(BlockId::from_u128(1)).unwrap();
    assert!(written >= before && written <= SystemTime::now() + Duration::from_secs(1));
    assert!(tier.written_at(BlockId::from_u128(999)).is_none());
}

#[test]
fn buffered_verify_reports_exactly_the_damaged_blocks() {
    check(false);
}

#[test]
fn direct_io_verify_reports_exactly_the_damaged_blocks() {
    check(true);
}
