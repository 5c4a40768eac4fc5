//! Write lanes: concurrent writers keep their blocks contiguous in segments of their own,
//! everything written through any lane survives a reopen, and reads of many runs across
//! lanes return the right bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: failing loudly is right
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::{BlockId, Tier};
use cascade_lustre::format::record_span;
use cascade_lustre::{FileTier, FileTierConfig};

const THREADS: usize = 4;
const BATCHES: usize = 6;
const PER_BATCH: usize = 8;
const BLOCK: usize = 20_000;

fn config(dir: &std::path::Path, lanes: usize) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(64);
    config.segment_size = ByteSize::mib(64);
    config.writer_id = Some("lanes".into());
    config.write_lanes = lanes;
    config
}

fn id(thread: usize, n: usize) -> BlockId {
    BlockId::from_u128(((thread as u128) << 32) | (n as u128 + 1))
}

fn data(thread: usize, n: usize) -> Vec<u8> {
    random_block((thread * 1000 + n) as u64, BLOCK)
}

/// Every thread writes its batches at the same time as the others.
fn write_concurrently(tier: &Arc<FileTier>) {
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tier = Arc::clone(tier);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for batch in 0..BATCHES {
                    let blocks: Vec<(BlockId, Vec<u8>)> = (0..PER_BATCH)
                        .map(|k| {
                            let n = batch * PER_BATCH + k;
                            (id(t, n), data(t, n))
                        })
                        .collect();
                    let items: Vec<(BlockId, &[u8])> =
                        blocks.iter().map(|(i, d)| (*i, d.as_slice())).collect();
                    for result in tier.put_batch(&items) {
                        result.unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

fn locations(tier: &FileTier, thread: usize) -> Vec<(PathBuf, u64)> {
    (0..BATCHES * PER_BATCH)
        .map(|n| tier.location(id(thread, n)).expect("stored"))
        .collect()
}

#[test]
fn each_writer_thread_appends_contiguously_to_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Arc::new(FileTier::open("file0", &config(dir.path(), THREADS)).unwrap());
    write_concurrently(&tier);
    let span = record_span(BLOCK as u64);
    let mut segments = Vec::new();
    for t in 0..THREADS {
        let placed = locations(&tier, t);
        let segment = &placed[0].0;
        for pair in placed.windows(2) {
            assert_eq!(&pair[1].0, segment, "thread {t} stays in one segment");
            assert_eq!(
                pair[1].1,
                pair[0].1 + span,
                "thread {t}'s records are back to back"
            );
        }
        segments.push(segment.clone());
    }
    segments.sort();
    segments.dedup();
    assert_eq!(segments.len(), THREADS, "one segment per writing thread");
}

#[test]
fn one_lane_interleaves_threads_in_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let tier = Arc::new(FileTier::open("file0", &config(dir.path(), 1)).unwrap());
    write_concurrently(&tier);
    let mut segments: Vec<PathBuf> = (0..THREADS)
        .flat_map(|t| locations(&tier, t))
        .map(|(path, _)| path)
        .collect();
    segments.sort();
    segments.dedup();
    assert_eq!(segments.len(), 1, "a single lane appends to one segment");
}

#[test]
fn blocks_of_every_lane_survive_reopen_and_read_back_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), THREADS);
    {
        let tier = Arc::new(FileTier::open("file0", &cfg).unwrap());
        write_concurrently(&tier);
    }
    let tier = FileTier::open("file0", &cfg).unwrap();
    let report = tier.open_report();
    assert_eq!(report.blocks, THREADS * BATCHES * PER_BATCH);
    assert_eq!(
        report.scanned_segments, 0,
        "every lane's segment was sealed at drop"
    );
    // One batch spanning every lane's segment, in an order unlike the layout.
    let wanted: Vec<(usize, usize)> = (0..BATCHES * PER_BATCH)
        .rev()
        .flat_map(|n| (0..THREADS).map(move |t| (t, n)))
        .collect();
    let mut outs = vec![vec![0u8; BLOCK]; wanted.len()];
    let mut requests: Vec<(BlockId, &mut [u8])> = wanted
        .iter()
        .zip(outs.iter_mut())
        .map(|((t, n), out)| (id(*t, *n), out.as_mut_slice()))
        .collect();
    for result in tier.get_batch(&mut requests) {
        assert_eq!(result.unwrap(), BLOCK);
    }
    for ((t, n), out) in wanted.iter().zip(&outs) {
        assert_eq!(out, &data(*t, *n), "thread {t} block {n}");
    }
}

#[test]
fn zero_lanes_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileTier::open("file0", &config(dir.path(), 0))
        .err()
        .expect("refused");
    assert_eq!(err.kind(), cascade_core::ErrorKind::Config);
    assert!(err.to_string().contains("write_lanes"), "{err}");
}
