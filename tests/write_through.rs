//! What survives a kill -9 under each write policy: a child process puts blocks into a
//! store whose fastest tier is process memory over a file tier, flushes, reports, and
//! is killed with SIGKILL; the parent reopens the file tier and looks for the blocks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cascade::{Cascade, CascadeConfig, TierConfig, WritePolicy};

const BLOCKS: u64 = 64;
const BLOCK: usize = 64 * 1024;
const CHILD_DIR: &str = "CASCADE_CRASH_CHILD_DIR";
const CHILD_POLICY: &str = "CASCADE_CRASH_CHILD_POLICY";
/// What the child prints once its flush returned (the test harness may print the test's
/// name on the same line).
const FLUSHED: &str = "cascade-crash-child-flushed";

fn config(dir: &Path, policy: WritePolicy) -> CascadeConfig {
    CascadeConfig {
        write_policy: policy,
        // Nothing moves on read: the blocks stay where the puts left them.
        promote_on_read: false,
        tiers: vec![
            // Room for every block: under write_back none of them reaches the file tier.
            TierConfig::new("memory")
                .named("memory")
                .with("capacity", "16 MiB"),
            TierConfig::new("file")
                .named("file")
                .with("path", dir.display().to_string())
                .with("capacity", "64 MiB"),
        ],
        ..CascadeConfig::default()
    }
}

fn block(n: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (i as u64).wrapping_mul(2654435761).wrapping_add(n * 977) as u8)
        .collect()
}

fn id(n: u64) -> cascade::BlockId {
    cascade::BlockId::from_u128(0x00C0_FFEE_0000 + u128::from(n))
}

/// The child's side: put, flush, say so, then wait to be killed.
fn child(dir: &Path, policy: WritePolicy) -> ! {
    let store = Cascade::open(&config(dir, policy)).expect("child store");
    for n in 0..BLOCKS {
        store.put(id(n), &block(n)).expect("child put");
    }
    store.flush().expect("child flush");
    println!("{FLUSHED}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Runs the child for `policy` in `dir`, kills it with SIGKILL once it has flushed, and
/// returns how many blocks a store reopened on `dir` serves with the right bytes.
fn crash_and_count(dir: &Path, policy: WritePolicy, test_name: &str) -> u64 {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_POLICY, format!("{policy:?}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let flushed = BufReader::new(stdout)
        .lines()
        .map_while(std::result::Result::ok)
        .any(|line| line.contains(FLUSHED));
    // Child::kill sends SIGKILL on Unix: no destructor, no exit handler runs.
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("reap the child");
    assert!(flushed, "the child never reported its flush ({status})");
    let store = Cascade::open(&config(dir, policy)).expect("reopen after the crash");
    let mut out = vec![0u8; BLOCK];
    (0..BLOCKS)
        .filter(|&n| {
            matches!(store.get(id(n), &mut out), Ok(Some(len)) if len == BLOCK && out == block(n))
        })
        .count() as u64
}

/// In the child process this runs the child's side instead of the test.
fn child_mode() -> Option<(std::path::PathBuf, WritePolicy)> {
    let dir = std::env::var_os(CHILD_DIR)?;
    let policy = match std::env::var(CHILD_POLICY).ok()?.as_str() {
        "WriteThrough" => WritePolicy::WriteThrough,
        _ => WritePolicy::WriteBack,
    };
    Some((dir.into(), policy))
}

#[test]
fn write_through_blocks_survive_kill_9_after_flush() {
    if let Some((dir, policy)) = child_mode() {
        child(&dir, policy);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let back = crash_and_count(
        dir.path(),
        WritePolicy::WriteThrough,
        "write_through_blocks_survive_kill_9_after_flush",
    );
    assert_eq!(back, BLOCKS, "every flushed block is back after kill -9");
}

#[test]
fn write_back_blocks_in_memory_are_lost_by_kill_9() {
    if let Some((dir, policy)) = child_mode() {
        child(&dir, policy);
    }
    // The contrast that shows the test above can fail: the same puts under write_back
    // stay in process memory, and the crash takes them.
    let dir = tempfile::tempdir().expect("tempdir");
    let back = crash_and_count(
        dir.path(),
        WritePolicy::WriteBack,
        "write_back_blocks_in_memory_are_lost_by_kill_9",
    );
    assert_eq!(
        back, 0,
        "write_back keeps these blocks only in process memory"
    );
}
