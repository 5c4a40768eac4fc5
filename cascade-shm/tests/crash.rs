//! A writer killed with SIGKILL in the middle of puts: after reopen every block is
//! either complete and correct or absent.
//!
//! The test re-runs its own test binary as the writer (the ignored test
//! `crash_writer_child`, which acts only when the environment names a pool).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_shm::ShmTier;
use common::{MAX_TAGGED, check_tagged, config, fill_tagged, pool_dir};

const POOL_ENV: &str = "CASCADE_SHM_CRASH_POOL";
const ROUND_ENV: &str = "CASCADE_SHM_CRASH_ROUND";
const FLUSHED_ENV: &str = "CASCADE_SHM_FLUSHED_POOL";
const FLUSHED_BLOCKS: u64 = 40;
const POOL_MIB: u64 = 32;
const IDS: u64 = 48;

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) + 1)
}

#[test]
#[ignore = "the writer process of killed_writer_leaves_blocks_complete_or_absent, which starts it"]
fn crash_writer_child() {
    let (Ok(dir), Ok(round)) = (std::env::var(POOL_ENV), std::env::var(ROUND_ENV)) else {
        return;
    };
    let round: u64 = round.parse().unwrap();
    let mut config = config(dir.as_ref(), POOL_MIB);
    // Odd rounds commit each put before it returns; even rounds in the background.
    config.background_commit = round % 2 == 0;
    let tier = Arc::new(ShmTier::open("shm0", &config).unwrap());
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let tier = Arc::clone(&tier);
            std::thread::spawn(move || {
                let mut state = round * 1_000_003 + t * 7 + 1;
                let mut staging = vec![0u8; MAX_TAGGED];
                for put in 0u64.. {
                    // xorshift: cheap in a debug build, so the kill lands mostly in puts.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let n = state % IDS;
                    let len = 24 + (state >> 20) as usize % (MAX_TAGGED / 4);
                    let version = (round << 40) | (t << 32) | put;
                    fill_tagged(n, version, &mut staging[..len]);
                    match tier.put_with(id(n), len, &mut |target| {
                        // Byte by byte on purpose: the copy is then most of a put's
                        // time, so kills land mid-copy, where a torn block would show.
                        for (dst, src) in target.iter_mut().zip(&staging[..len]) {
                            // SAFETY: dst is a valid, exclusive reference.
                            unsafe { std::ptr::write_volatile(dst, *src) };
                        }
                        Ok(())
                    }) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::TierFull => {
                            tier.remove(id((n + 1) % IDS)).unwrap();
                        }
                        Err(e) => panic!("child put: {e}"),
                    }
                    if put == 8 && t == 0 {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "cascade-shm-crash-child: writing");
                        let _ = out.flush();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn killed_writer_leaves_blocks_complete_or_absent() {
    let dir = pool_dir();
    let exe = std::env::current_exe().unwrap();
    let mut versions_seen = std::collections::HashSet::new();
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(POOL_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Kept open until the kill, so the child never writes into a closed pipe.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("cascade-shm-crash-child: writing"));
        assert!(
            started,
            "the writer child exited before writing (round {round})"
        );
        std::thread::sleep(Duration::from_millis(5 + round * 23));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");
        drop(lines);

        let tier = ShmTier::open("shm0", &config(dir.path(), POOL_MIB)).unwrap();
        let ids = tier.ids();
        assert!(
            !ids.is_empty(),
            "round {round}: the child committed blocks before the kill"
        );
        let mut rounded = 0;
        for (block, len) in &ids {
            let n = (block.as_u128() - 1) as u64;
            assert!(n < IDS, "round {round}: unknown id {block}");
            let mut out = vec![0u8; *len as usize];
            assert_eq!(tier.get(*block, &mut out).unwrap(), *len as usize);
            let version = check_tagged(n, &out);
            versions_seen.insert(version >> 40);
            rounded += len.div_ceil(4096) * 4096;
        }
        assert_eq!(
            tier.used(),
            rounded,
            "round {round}: allocator rebuilt from the blocks"
        );
        eprintln!(
            "round {round}: {} blocks recovered, {} slots dropped",
            tier.recovered_blocks(),
            tier.dropped_at_open()
        );
    }
    assert!(
        versions_seen.len() > 1,
        "later rounds wrote blocks that survived too"
    );
}

#[test]
#[ignore = "the writer process of a_flush_survives_a_kill, which starts it"]
fn flushing_writer_child() {
    let Ok(dir) = std::env::var(FLUSHED_ENV) else {
        return;
    };
    let tier = ShmTier::open("shm0", &config(dir.as_ref(), POOL_MIB)).unwrap();
    for n in 0..FLUSHED_BLOCKS {
        let len = 24 + (n as usize * 7919) % 200_000;
        tier.put_with(id(n), len, &mut |target| {
            fill_tagged(n, 1, target);
            Ok(())
        })
        .unwrap();
    }
    tier.flush().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "cascade-shm-crash-child: flushed").unwrap();
    out.flush().unwrap();
    // Wait to be killed, holding the pool open: nothing more is committed by a close.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_flush_survives_a_kill() {
    let dir = pool_dir();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "flushing_writer_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FLUSHED_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let flushed = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("cascade-shm-crash-child: flushed"));
    // While the child holds the pool, another process cannot open it.
    let busy = ShmTier::open("shm0", &config(dir.path(), POOL_MIB)).err();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lines);
    assert!(flushed, "the writer child did not reach its flush");
    let busy = busy.expect("a second process opened a pool that was open for writing");
    assert_eq!(busy.kind(), ErrorKind::Busy, "{busy}");
    let tier = ShmTier::open("shm0", &config(dir.path(), POOL_MIB)).unwrap();
    assert_eq!(tier.recovered_blocks() as u64, FLUSHED_BLOCKS);
    for n in 0..FLUSHED_BLOCKS {
        let len = tier.len_of(id(n)).unwrap() as usize;
        let mut out = vec![0u8; len];
        tier.get(id(n), &mut out).unwrap();
        assert_eq!(check_tagged(n, &out), 1);
    }
}
