//! Crash safety: a writer killed with SIGKILL mid-write, and a filesystem that fills up.
//!
//! The test binary re-executes itself as the child (selected by an environment
//! variable), so the kill hits a real process between or inside real system calls.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_lustre::{FileTier, FileTierConfig, IoEngine};

mod common;

const CHILD_ENV: &str = "CASCADE_LUSTRE_CRASH_CHILD";
const FULL_ENV: &str = "CASCADE_LUSTRE_FULL_CHILD";

fn config(dir: &Path, writer: &str, engine: IoEngine) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.io_engine = engine;
    config.capacity = ByteSize::gib(1);
    config.segment_size = ByteSize::mib(1);
    config.writer_id = Some(writer.into());
    config
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) + 1)
}

fn block(n: u64) -> Vec<u8> {
    random_block(n, 1 + (n as usize * 7919) % 70_000)
}

/// The child: puts blocks forever, removes every fifth, and reports each acknowledged
/// call on stdout.
fn crash_child(dir: &str, engine: IoEngine) {
    let tier = FileTier::open("child", &config(Path::new(dir), "child", engine)).unwrap();
    for n in 0.. {
        tier.put(id(n), &block(n)).unwrap();
        println!("PUT {n}");
        if n % 5 == 4 {
            assert!(tier.remove(id(n - 2)).unwrap());
            println!("DEL {}", n - 2);
        }
    }
}

/// The number after `tag`; the harness may print its own text before it on the line.
fn tagged(line: &str, tag: &str) -> Option<u64> {
    line.rsplit_once(tag)
        .and_then(|(_, n)| n.trim().parse().ok())
}

/// Runs this binary's test `base` under `engine` (the child runs the same engine) as a
/// child process.
fn run_child(base: &str, engine: IoEngine, env: &str, dir: &Path) -> std::process::Child {
    let tag = match engine {
        IoEngine::IoUring => "io_uring",
        _ => "psync",
    };
    let test = format!("{base}::{tag}");
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

per_engine!(
    acknowledged_writes_and_removes_survive_sigkill,
    a_full_filesystem_fails_the_put_and_keeps_everything_before,
);

fn acknowledged_writes_and_removes_survive_sigkill(engine: IoEngine) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        crash_child(&dir, engine);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let mut child = run_child(
            "acknowledged_writes_and_removes_survive_sigkill",
            engine,
            CHILD_ENV,
            dir.path(),
        );
        let stdout = child.stdout.take().unwrap();
        let mut put = Vec::new();
        let mut removed = Vec::new();
        // Kill at a different point each round: after 40, 90, 140 acknowledged puts.
        let kill_after = 40 + round as usize * 50;
        let mut killed = false;
        // After the kill, the pipe still holds every line the child wrote before dying.
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = tagged(&line, "PUT ") {
                put.push(n);
            } else if let Some(n) = tagged(&line, "DEL ") {
                removed.push(n);
            }
            if put.len() >= kill_after && !killed {
                Command::new("kill")
                    .args(["-9", &child.id().to_string()])
                    .status()
                    .unwrap();
                killed = true;
            }
        }
        // A remove that returned just before the kill but was not reported yet.
        let last = *put.last().unwrap();
        let in_flight_remove = (last % 5 == 4 && !removed.contains(&(last - 2))).then(|| last - 2);
        child.wait().unwrap();
        let tier = FileTier::open("parent", &config(dir.path(), "parent", engine)).unwrap();
        let mut out = vec![0u8; 80_000];
        for n in &put {
            if in_flight_remove == Some(*n) && !tier.contains(id(*n)) {
                continue;
            }
            if removed.contains(n) {
                assert!(
                    !tier.contains(id(*n)),
                    "round {round}: removed block {n} came back"
                );
                continue;
            }
            let len = tier
                .get(id(*n), &mut out)
                .unwrap_or_else(|e| panic!("round {round}: block {n}: {e}"));
            assert!(
                out[..len] == block(*n)[..],
                "round {round}: bytes of block {n}"
            );
        }
        // Whatever else is there (a put in flight at the kill) must be intact too.
        for (other, len) in tier.ids() {
            let n = u64::try_from(other.as_u128() - 1).unwrap();
            assert_eq!(len as usize, block(n).len());
        }
        tier.clear().unwrap();
    }
}

fn full_child(dir: &str, engine: IoEngine) {
    // SAFETY: setting a signal disposition and a resource limit of this process only.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 3 << 20,
            rlim_max: 3 << 20,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut config = config(Path::new(dir), "full", engine);
    config.segment_size = ByteSize::mib(64);
    let tier = FileTier::open("child", &config).unwrap();
    let mut stored = 0u64;
    let err = loop {
        match tier.put(id(stored), &random_block(stored, 100_000)) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    let mut out = vec![0u8; 100_000];
    for n in 0..stored {
        assert_eq!(tier.get(id(n), &mut out).unwrap(), 100_000);
        assert!(
            out == random_block(n, 100_000),
            "block {n} after the failed put"
        );
    }
    // A smaller block still fits in what is left below the limit.
    tier.put(id(10_000), b"small").unwrap();
    tier.flush().unwrap();
    println!("STORED {stored}");
}

fn a_full_filesystem_fails_the_put_and_keeps_everything_before(engine: IoEngine) {
    if let Ok(dir) = std::env::var(FULL_ENV) {
        full_child(&dir, engine);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_child(
        "a_full_filesystem_fails_the_put_and_keeps_everything_before",
        engine,
        FULL_ENV,
        dir.path(),
    );
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let stored = lines.iter().find_map(|line| tagged(line, "STORED "));
    assert!(child.wait().unwrap().success(), "the child's checks failed");
    let stored = stored.unwrap_or_else(|| panic!("the child reported what it stored: {lines:?}"));
    assert!(
        stored >= 20,
        "about 30 blocks of 100 KB fit under 3 MiB, got {stored}"
    );
    let tier = FileTier::open("parent", &config(dir.path(), "parent", engine)).unwrap();
    let mut out = vec![0u8; 100_000];
    for n in 0..stored {
        assert_eq!(tier.get(id(n), &mut out).unwrap(), 100_000);
        assert!(out == random_block(n, 100_000));
    }
    assert_eq!(tier.get(id(10_000), &mut out).unwrap(), 5);
    assert_eq!(tier.ids().len() as u64, stored + 1);
}
