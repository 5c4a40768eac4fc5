//! The `io_engine` setting: what `"auto"` and `"io_uring"` do where a seccomp filter
//! forbids io_uring (as Docker's default profile does), and batches that stress the
//! io_uring paths (more requests than a ring holds, more iovecs than one request takes,
//! more O_DIRECT bytes than the staging buffer) giving the same bytes on both engines.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::path::Path;

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_lustre::{EngineInUse, FileTier, FileTierConfig, IoEngine};

fn config(dir: &Path, engine: IoEngine) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(512);
    config.segment_size = ByteSize::mib(64);
    config.writer_id = Some("w".into());
    config.io_engine = engine;
    config
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(n as u128 + 1)
}

/// Makes io_uring_setup, io_uring_enter and io_uring_register fail with EPERM in the
/// calling thread and the threads it starts afterwards, as Docker's default seccomp
/// profile does for a whole container.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn forbid_io_uring_in_this_thread() {
    // The three io_uring system calls are 425..=427 on both architectures.
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut filter = [
        // seccomp_data.nr is the first 32-bit word.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 425, 0, 2),
        jump(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K, 427, 1, 0),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with valid arguments; the filter program is read during the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ),
            0,
            "installing a seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
    assert!(
        cascade_lustre::io_uring_available().is_err(),
        "the filter forbids io_uring"
    );
}

/// Calls the io_uring engine did with pread/pwrite for want of a ring.
fn fallbacks(tier: &FileTier) -> f64 {
    tier.extra_stats()
        .into_iter()
        .find_map(|(key, value)| (key == "io_uring_fallbacks").then_some(value))
        .expect("the stat is reported")
}

/// Puts `count` blocks in one batch and reads them back in one batch; on the io_uring
/// engine from a thread with a ring, without falling back.
fn round_trip(tier: &FileTier, count: usize, len: usize) {
    let before = fallbacks(tier);
    let blocks: Vec<Vec<u8>> = (0..count).map(|n| random_block(n as u64, len)).collect();
    let items: Vec<(BlockId, &[u8])> = blocks
        .iter()
        .enumerate()
        .map(|(n, b)| (id(n), b.as_slice()))
        .collect();
    for result in tier.put_batch(&items) {
        result.unwrap();
    }
    let mut outs = vec![vec![0u8; len]; count];
    let mut requests: Vec<(BlockId, &mut [u8])> = outs
        .iter_mut()
        .enumerate()
        .map(|(n, o)| (id(n), o.as_mut_slice()))
        .collect();
    for result in tier.get_batch(&mut requests) {
        assert_eq!(result.unwrap(), len);
    }
    assert!(outs == blocks, "bytes read back differ");
    if tier.io_engine() == EngineInUse::IoUring && cascade_lustre::io_uring_available().is_ok() {
        assert_eq!(fallbacks(tier), before, "the ring did the I/O");
    }
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn where_seccomp_forbids_io_uring_auto_falls_back_and_io_uring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    std::thread::spawn(move || {
        forbid_io_uring_in_this_thread();
        let err = FileTier::open("file0", &config(&dir, IoEngine::IoUring))
            .err()
            .expect("io_uring is forbidden here");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("io_uring"), "{err}");
        let tier = FileTier::open("file0", &config(&dir, IoEngine::Auto)).unwrap();
        assert_eq!(tier.io_engine(), EngineInUse::Psync);
        assert_eq!(tier.open_report().io_engine, Some(EngineInUse::Psync));
        let stats = tier.extra_stats();
        assert!(stats.contains(&("io_uring".into(), 0.0)), "{stats:?}");
        round_trip(&tier, 50, 100_000);
    })
    .join()
    .unwrap();
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn an_io_uring_tier_serves_threads_that_may_not_use_io_uring() {
    if !common::io_uring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for direct in [false, true] {
        let mut config = config(&dir.path().join(format!("d{direct}")), IoEngine::IoUring);
        config.direct_io = direct;
        let tier = FileTier::open("file0", &config).unwrap();
        assert_eq!(tier.io_engine(), EngineInUse::IoUring);
        std::thread::scope(|s| {
            s.spawn(|| {
                forbid_io_uring_in_this_thread();
                round_trip(&tier, 40, 70_000);
            });
        });
        assert_eq!(
            fallbacks(&tier),
            2.0,
            "the put_batch and the get_batch used pwrite and pread"
        );
        // And the threads that may still use their rings read what it wrote.
        let mut out = vec![0u8; 70_000];
        for n in 0..40 {
            assert_eq!(tier.get(id(n), &mut out).unwrap(), 70_000);
            assert!(out == random_block(n as u64, 70_000));
        }
        assert_eq!(fallbacks(&tier), 2.0, "these reads used the ring");
    }
}

#[test]
fn auto_picks_io_uring_where_it_is_available() {
    if !common::io_uring_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), IoEngine::Auto)).unwrap();
    assert_eq!(tier.io_engine(), EngineInUse::IoUring);
    assert!(tier.extra_stats().contains(&("io_uring".into(), 1.0)));
    let psync = FileTier::open("file1", &config(&dir.path().join("p"), IoEngine::Psync)).unwrap();
    assert_eq!(psync.io_engine(), EngineInUse::Psync);
}

per_engine!(
    a_direct_batch_larger_than_the_staging_buffer_round_trips,
    a_batch_of_more_runs_than_the_ring_holds_round_trips,
    a_run_of_more_records_than_one_request_takes_round_trips,
);

fn a_direct_batch_larger_than_the_staging_buffer_round_trips(engine: IoEngine) {
    // 300 records of 128 KiB: about 40 MiB in one put_batch and one get_batch, more than
    // the 16 MiB staging buffer and the 32 MiB write run.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), engine);
    config.direct_io = true;
    let tier = FileTier::open("file0", &config).unwrap();
    round_trip(&tier, 300, 128 << 10);
    drop(tier);
    let tier = FileTier::open("file0", &config).unwrap();
    assert_eq!(tier.ids().len(), 300, "all there after reopen");
}

fn a_batch_of_more_runs_than_the_ring_holds_round_trips(engine: IoEngine) {
    // Every other block of 1200: 600 separate runs in one get_batch (a ring holds 256
    // requests), on buffered and direct I/O.
    for direct in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), engine);
        config.direct_io = direct;
        let tier = FileTier::open("file0", &config).unwrap();
        let blocks: Vec<Vec<u8>> = (0..1200)
            .map(|n| random_block(n, 3000 + n as usize))
            .collect();
        let items: Vec<(BlockId, &[u8])> = blocks
            .iter()
            .enumerate()
            .map(|(n, b)| (id(n), b.as_slice()))
            .collect();
        for result in tier.put_batch(&items) {
            result.unwrap();
        }
        let mut outs: Vec<Vec<u8>> = (0..600).map(|k| vec![0u8; blocks[2 * k].len()]).collect();
        let mut requests: Vec<(BlockId, &mut [u8])> = outs
            .iter_mut()
            .enumerate()
            .map(|(k, o)| (id(2 * k), o.as_mut_slice()))
            .collect();
        for (k, result) in tier.get_batch(&mut requests).into_iter().enumerate() {
            assert_eq!(result.unwrap(), blocks[2 * k].len());
        }
        for (k, out) in outs.iter().enumerate() {
            assert!(*out == blocks[2 * k], "direct {direct}: block {}", 2 * k);
        }
    }
}

fn a_run_of_more_records_than_one_request_takes_round_trips(engine: IoEngine) {
    // 2000 adjacent records of 1000 bytes: one run of 6000 iovecs (a request takes 1024).
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), engine)).unwrap();
    round_trip(&tier, 2000, 1000);
}
