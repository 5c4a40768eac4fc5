//! Compaction: reclaims dead space, keeps serving readers while it runs, and is safe
//! whichever step a crash interrupts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::{BlockId, Tier};
use cascade_lustre::{FileTier, FileTierConfig};

fn config(dir: &Path, background: bool) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(256);
    config.segment_size = ByteSize::mib(1);
    config.writer_id = Some("w".into());
    config.background_compaction = background;
    config
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) + 1)
}

fn block(n: u64) -> Vec<u8> {
    random_block(n, 50_000 + (n as usize % 7) * 1000)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// 200 blocks over about ten 1 MiB segments, three quarters removed.
fn populate(tier: &FileTier) -> Vec<u64> {
    for n in 0..200 {
        tier.put(id(n), &block(n)).unwrap();
    }
    tier.seal_active().unwrap();
    let kept: Vec<u64> = (0..200).filter(|n| n % 4 == 0).collect();
    for n in (0..200).filter(|n| n % 4 != 0) {
        assert!(tier.remove(id(n)).unwrap());
    }
    kept
}

fn check(tier: &FileTier, kept: &[u64]) {
    let mut out = vec![0u8; 64 * 1024];
    for &n in kept {
        let len = tier
            .get(id(n), &mut out)
            .unwrap_or_else(|e| panic!("block {n}: {e}"));
        assert!(out[..len] == block(n)[..], "block {n}");
    }
    assert_eq!(tier.ids().len(), kept.len());
    for n in (0..200).filter(|n| n % 4 != 0) {
        assert!(!tier.contains(id(n)), "removed block {n} is back");
    }
}

#[test]
fn compaction_reclaims_space_while_readers_keep_reading() {
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), false)).unwrap();
    let kept = populate(&tier);
    let before = dir_bytes(dir.path());
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        for t in 0..3u64 {
            let (tier, kept, stop) = (&tier, &kept, &stop);
            scope.spawn(move || {
                let mut out = vec![0u8; 64 * 1024];
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 50 {
                    let n = kept[((reads * 7 + t) % kept.len() as u64) as usize];
                    let len = tier
                        .get(id(n), &mut out)
                        .unwrap_or_else(|e| panic!("read of {n} during compaction: {e}"));
                    assert!(
                        out[..len] == block(n)[..],
                        "block {n} read during compaction"
                    );
                    reads += 1;
                }
            });
        }
        let report = tier.compact().unwrap();
        stop.store(true, Ordering::Relaxed);
        report
    });
    assert!(report.segments >= 8, "{report:?}");
    let after = dir_bytes(dir.path());
    assert!(
        after * 2 < before,
        "files shrank from {before} to {after} bytes"
    );
    check(&tier, &kept);
    drop(tier);
    let reopened = FileTier::open("file0", &config(dir.path(), false)).unwrap();
    check(&reopened, &kept);
}

#[test]
fn background_compaction_runs_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), true)).unwrap();
    let kept = populate(&tier);
    let deadline = Instant::now() + Duration::from_secs(60);
    let compactions = || {
        tier.extra_stats()
            .into_iter()
            .find(|(k, _)| k == "compactions")
            .map_or(0.0, |(_, v)| v)
    };
    while compactions() < 8.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        compactions() >= 8.0,
        "background compaction rewrote the dead segments"
    );
    check(&tier, &kept);
}

/// A crash after the copies were made but before the old segments were deleted leaves
/// both on disk: restoring the old files after compaction reproduces that state.
#[test]
fn a_crash_before_old_segments_are_deleted_loses_nothing_and_revives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), false)).unwrap();
    let kept = populate(&tier);
    tier.flush().unwrap();
    let old: Vec<_> = tier.segment_paths();
    for path in &old {
        std::fs::copy(path, saved.path().join(path.file_name().unwrap())).unwrap();
    }
    assert!(tier.compact().unwrap().segments > 0);
    tier.flush().unwrap();
    drop(tier);
    for path in &old {
        let copy = saved.path().join(path.file_name().unwrap());
        if !path.exists() {
            std::fs::copy(copy, path).unwrap();
        }
    }
    let reopened = FileTier::open("file0", &config(dir.path(), false)).unwrap();
    check(&reopened, &kept);
    // The duplicates are dead weight that the next compaction removes.
    assert!(reopened.compact().unwrap().segments > 0);
    check(&reopened, &kept);
}
