//! The conformance kit (one test per behaviour) on buffered and direct I/O with each
//! engine, and reopening after a drop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test bodies run outside #[test] fns (once per engine)

use std::sync::Arc;

use cascade_core::config::ByteSize;
use cascade_core::conformance::{Subject, random_block};
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_lustre::{EngineInUse, FileTier, FileTierConfig, IoEngine};

mod common;

fn config(dir: &std::path::Path) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(16);
    config.segment_size = ByteSize::mib(2);
    config.writer_id = Some("test".into());
    config
}

/// The settings of `engine`'s tests, which must run on that very engine.
fn engine_config(dir: &std::path::Path, engine: IoEngine) -> FileTierConfig {
    let mut config = config(dir);
    config.io_engine = engine;
    config
}

fn open_on(name: &str, config: &FileTierConfig) -> cascade_core::Result<FileTier> {
    let tier = FileTier::open(name, config)?;
    let want = match config.io_engine {
        IoEngine::Psync => EngineInUse::Psync,
        _ => EngineInUse::IoUring,
    };
    assert_eq!(tier.io_engine(), want);
    Ok(tier)
}

per_engine!(blocks_survive_drop_and_reopen_across_many_segments);

/// A tier on a fresh directory; its peer is a second writer on the same directory, as
/// another process sharing it would be. `None` (after saying why) where the engine
/// cannot run here.
fn kit_subject(engine: IoEngine, direct_io: bool) -> Option<Subject> {
    if engine == IoEngine::IoUring && !common::io_uring_or_skip() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = engine_config(dir.path(), engine);
    config.direct_io = direct_io;
    let mut peer = config.clone();
    peer.writer_id = Some("peer".into());
    Some(
        Subject::new(move || Ok(Arc::new(open_on("file0", &config)?) as Arc<dyn Tier>))
            .with_peer(move || Ok(Arc::new(open_on("file1", &peer)?) as Arc<dyn Tier>))
            .keeping(dir),
    )
}

fn psync_buffered() -> Option<Subject> {
    kit_subject(IoEngine::Psync, false)
}

fn psync_direct() -> Option<Subject> {
    kit_subject(IoEngine::Psync, true)
}

fn io_uring_buffered() -> Option<Subject> {
    kit_subject(IoEngine::IoUring, false)
}

fn io_uring_direct() -> Option<Subject> {
    kit_subject(IoEngine::IoUring, true)
}

cascade_core::conformance_tests!(mod psync_buffered_kit, psync_buffered);
cascade_core::conformance_tests!(mod psync_direct_kit, psync_direct);
cascade_core::conformance_tests!(mod io_uring_buffered_kit, io_uring_buffered);
cascade_core::conformance_tests!(mod io_uring_direct_kit, io_uring_direct);

fn blocks_survive_drop_and_reopen_across_many_segments(engine: IoEngine) {
    let dir = tempfile::tempdir().unwrap();
    let config = engine_config(dir.path(), engine);
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..40u64)
        .map(|n| {
            (
                BlockId::from_u128(u128::from(n) + 1),
                random_block(n, 100_000 + n as usize * 13),
            )
        })
        .collect();
    {
        let tier = open_on("file0", &config).unwrap();
        let items: Vec<(BlockId, &[u8])> =
            blocks.iter().map(|(id, d)| (*id, d.as_slice())).collect();
        for result in tier.put_batch(&items[..20]) {
            result.unwrap();
        }
        for (id, data) in &blocks[20..] {
            tier.put(*id, data).unwrap();
        }
        assert!(tier.segment_paths().len() > 1, "2 MiB segments roll");
        assert!(tier.remove(blocks[5].0).unwrap());
        tier.put(blocks[6].0, b"replaced").unwrap();
    }
    let tier = open_on("file0", &config).unwrap();
    assert_eq!(
        tier.open_report().scanned_segments,
        0,
        "a clean close seals every segment"
    );
    assert!(!tier.contains(blocks[5].0));
    let mut out = vec![0u8; 200_000];
    assert_eq!(tier.get(blocks[6].0, &mut out).unwrap(), 8);
    assert_eq!(&out[..8], b"replaced");
    for (id, data) in blocks
        .iter()
        .filter(|(id, _)| *id != blocks[5].0 && *id != blocks[6].0)
    {
        let n = tier.get(*id, &mut out).unwrap();
        assert_eq!(&out[..n], &data[..]);
    }
    assert_eq!(tier.ids().len(), 39);
}

#[test]
fn a_second_live_tier_with_the_same_writer_is_busy_and_other_writers_share() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let first = FileTier::open("file0", &config).unwrap();
    let err = FileTier::open("file1", &config).err().map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::Busy));
    first
        .put(BlockId::from_u128(1), b"from the first writer")
        .unwrap();
    first.flush().unwrap();
    let mut other = config.clone();
    other.writer_id = Some("rank-2".into());
    let second = FileTier::open("file1", &other).unwrap();
    let mut out = vec![0u8; 64];
    let n = second.get(BlockId::from_u128(1), &mut out).unwrap();
    assert_eq!(&out[..n], b"from the first writer");
    second
        .put(BlockId::from_u128(2), b"from the second")
        .unwrap();
    drop(second);
    drop(first);
    let reopened = FileTier::open("file0", &config).unwrap();
    assert_eq!(reopened.ids().len(), 2);
}

#[test]
fn one_process_may_open_a_directory_twice_with_the_default_writer_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.writer_id = None;
    let first = FileTier::open("file0", &config).unwrap();
    first.put(BlockId::from_u128(1), b"first").unwrap();
    let second = FileTier::open("file1", &config).unwrap();
    assert_ne!(first.writer_id(), second.writer_id());
    second.put(BlockId::from_u128(2), b"second").unwrap();
    assert!(
        second.contains(BlockId::from_u128(1)),
        "sees what the first wrote before it opened"
    );
    drop(first);
    drop(second);
    let third = FileTier::open("file2", &config).unwrap();
    assert_eq!(third.ids().len(), 2);
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(cascade_lustre::FORMAT_FILE),
        "cascade file tier format 99\n",
    )
    .unwrap();
    let err = FileTier::open("file0", &config(dir.path()))
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::Incompatible));
}

#[test]
fn missing_path_is_a_config_error_naming_it() {
    let settings = toml::Table::new();
    let tier = cascade_core::TierConfig {
        kind: "file".into(),
        name: None,
        required: true,
        settings,
    };
    let err = tier.parse_settings::<FileTierConfig>(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("path"), "{err}");
}

#[test]
fn temporary_files_left_by_a_crash_are_removed_but_a_live_writers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    drop(FileTier::open("file0", &config).unwrap());
    let mut live = config.clone();
    live.writer_id = Some("live".into());
    let live_tier = FileTier::open("live", &live).unwrap();
    let leftovers = [
        "test.del.tmp",               // our own delete log, being rewritten at a crash
        "gone.del.tmp",               // a writer whose lock nobody holds
        "CASCADE-FILE-TIER.tmp.4242", // a format marker never renamed
    ];
    for name in leftovers.iter().chain(std::iter::once(&"live.del.tmp")) {
        std::fs::write(dir.path().join(name), b"partial").unwrap();
    }
    let tier = FileTier::open("file0", &config).unwrap();
    for name in leftovers {
        assert!(!dir.path().join(name).exists(), "{name} removed");
    }
    assert!(
        dir.path().join("live.del.tmp").exists(),
        "a live writer may be renaming it right now"
    );
    tier.put(BlockId::from_u128(9), b"still works").unwrap();
    drop(live_tier);
}
