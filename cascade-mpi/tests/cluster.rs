//! The cluster store under real MPI jobs.
//!
//! Run by `cargo test`, this binary is the driver: it launches itself under `mpirun`
//! (or `$CASCADE_MPIRUN`, e.g. `mpiexec.mpich`) with 2 and 4 ranks (`--oversubscribe`
//! for Open MPI, and again with the TCP transport forced by `--mca btl tcp,self`), each
//! rank running the scenarios below as a worker. Without a launcher it prints why it
//! skipped; where `CASCADE_REQUIRE` names `mpi` (CI's .ci/run) a missing launcher fails.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cascade::core::require::Requirement;
use cascade::{BlockId, Cascade, CascadeConfig, ErrorKind, PutOutcome};
use cascade_mpi::{ClusterStore, Mpi};

type TestResult = Result<(), String>;

const WORKER: &str = "--cascade-mpi-worker";
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(WORKER) {
        return worker(&args[2..]);
    }
    // `cargo test -- --list` and filters: one test, named `cluster`.
    if args.iter().any(|a| a == "--list") {
        println!("cluster: test");
        return ExitCode::SUCCESS;
    }
    driver()
}

// ---------------------------------------------------------------------------------------
// Driver

struct Launcher {
    program: String,
    open_mpi: bool,
}

fn launcher() -> Option<Launcher> {
    let program = std::env::var("CASCADE_MPIRUN").unwrap_or_else(|_| "mpirun".to_string());
    let output = Command::new(&program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    Some(Launcher {
        open_mpi: text.contains("Open MPI") || text.contains("OpenRTE"),
        program,
    })
}

fn driver() -> ExitCode {
    let Some(launcher) = launcher() else {
        println!(
            "cluster tests skipped: no MPI launcher (`mpirun`, or $CASCADE_MPIRUN) on PATH; \
             install Open MPI (apt-get install openmpi-bin libopenmpi-dev)"
        );
        return match cascade::core::require::is_required(Requirement::Mpi) {
            Ok(false) => ExitCode::SUCCESS,
            Ok(true) => {
                eprintln!("CASCADE_REQUIRE names mpi: a missing MPI launcher is an error here");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    };
    let mut transports: Vec<(&str, Vec<&str>)> = vec![("default transport", vec![])];
    if launcher.open_mpi {
        transports.push(("TCP transport", vec!["--mca", "btl", "tcp,self"]));
    }
    let mut failures = 0;
    for ranks in [2usize, 4] {
        for (label, extra) in &transports {
            let name = format!("{ranks} ranks, {label}");
            let started = Instant::now();
            match run_suite(&launcher, ranks, extra) {
                Ok(()) => println!("test cluster [{name}] ... ok ({:.1?})", started.elapsed()),
                Err(e) => {
                    failures += 1;
                    println!("test cluster [{name}] ... FAILED\n{e}");
                }
            }
        }
    }
    if failures > 0 {
        println!("test result: FAILED. {failures} configuration(s) failed");
        return ExitCode::FAILURE;
    }
    println!("test result: ok.");
    ExitCode::SUCCESS
}

fn run_suite(launcher: &Launcher, ranks: usize, extra: &[&str]) -> TestResult {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = dir.path();
    mpirun(
        launcher,
        ranks,
        extra,
        &["scenarios", &dir.join("s").to_string_lossy()],
        true,
    )?;
    // Kill one rank after every rank flushed, then start the job again with the same
    // ranks: every flushed block must come back, from any rank.
    let crash = dir.join("crash");
    mpirun(
        launcher,
        ranks,
        extra,
        &["crash-write", &crash.to_string_lossy()],
        false,
    )?;
    mpirun(
        launcher,
        ranks,
        extra,
        &["crash-read", &crash.to_string_lossy()],
        true,
    )
}

fn mpirun(
    launcher: &Launcher,
    ranks: usize,
    extra: &[&str],
    args: &[&str],
    must_succeed: bool,
) -> TestResult {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(&launcher.program);
    command.arg("-n").arg(ranks.to_string());
    if launcher.open_mpi {
        command.arg("--oversubscribe");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc_geteuid() } == 0 {
            command.arg("--allow-run-as-root");
        }
    }
    command
        .args(extra)
        .arg(&exe)
        .arg(WORKER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("{command:?}: {e}"))?;
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let output = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "{command:?} ran past {RUN_LIMIT:?}\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if must_succeed && !status.success() {
        return Err(format!("{command:?} failed ({status}):\n{text}"));
    }
    if !must_succeed && status.success() {
        return Err(format!(
            "{command:?} should have ended with the killed rank:\n{text}"
        ));
    }
    if must_succeed && !text.contains("rank 0: all checks passed") {
        return Err(format!(
            "{command:?}: rank 0 did not report its checks:\n{text}"
        ));
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

// ---------------------------------------------------------------------------------------
// Worker (one per rank)

fn worker(args: &[String]) -> ExitCode {
    let (Some(what), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: {WORKER} <scenarios|crash-write|crash-read> <dir>");
        return ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    let mpi = match Mpi::init() {
        Ok(mpi) => mpi,
        Err(e) => {
            eprintln!("MPI: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rank = mpi.rank();
    let outcome = match what.as_str() {
        "scenarios" => scenarios(&mpi, &dir),
        "crash-write" => crash_write(&mpi, &dir),
        "crash-read" => crash_read(&mpi, &dir),
        other => Err(format!("unknown worker scenario {other:?}")),
    };
    match outcome {
        Ok(()) => {
            println!("rank {rank}: all checks passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rank {rank}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scenarios(mpi: &Mpi, dir: &Path) -> TestResult {
    type Scenario = fn(&ClusterStore) -> TestResult;
    let tiered: [(&str, Scenario); 4] = [
        ("remote get", remote_get),
        ("dedup", dedup),
        ("lookup_prefix", lookup_prefix),
        ("batches", batches),
    ];
    for (i, (name, scenario)) in tiered.into_iter().enumerate() {
        let cluster = open(mpi, &tiered_config(&dir.join(format!("t{i}")), true))?;
        scenario(&cluster).map_err(|e| format!("{name}: {e}"))?;
        cluster.close().map_err(|e| format!("{name}: close: {e}"))?;
    }
    let pool_dir = dir.join("damaged");
    let cluster = open(mpi, &tiered_config(&pool_dir, true))?;
    damaged_in_the_pool_is_a_miss(&cluster, &pool_dir)
        .map_err(|e| format!("damaged in the pool: {e}"))?;
    cluster.close().map_err(|e| e.to_string())?;
    let cluster = open(mpi, &file_only_config(&dir.join("corrupt").join("{rank}")))?;
    corrupt_remote_is_a_miss(&cluster, &dir.join("corrupt"))
        .map_err(|e| format!("corrupt: {e}"))?;
    cluster.close().map_err(|e| e.to_string())?;
    let cluster = open(mpi, &file_only_config(&dir.join("shared")))?;
    shared_file_tier(&cluster).map_err(|e| format!("shared file tier: {e}"))?;
    cluster.close().map_err(|e| e.to_string())
}

fn open(mpi: &Mpi, config: &CascadeConfig) -> Result<ClusterStore, String> {
    ClusterStore::open(mpi, config, Cascade::open).map_err(|e| format!("open: {e}"))
}

/// A shm pool per rank (a file in the test directory) above a file tier per rank.
fn tiered_config(dir: &Path, dedup: bool) -> CascadeConfig {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let text = format!(
        r#"
        dedup = {dedup}
        [[tiers]]
        kind = "shm"
        path = "{dir}/shm-{{rank}}.pool"
        capacity = "16 MiB"
        prefault = false
        [[tiers]]
        kind = "file"
        path = "{dir}/file-{{rank}}"
        capacity = "256 MiB"
        "#,
        dir = dir.display()
    );
    CascadeConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("test config: {e}"))
}

fn file_only_config(path: &Path) -> CascadeConfig {
    let text = format!(
        "[[tiers]]\nkind = \"file\"\npath = \"{}\"\ncapacity = \"256 MiB\"\n",
        path.display()
    );
    CascadeConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("test config: {e}"))
}

fn id_of(tag: u64, rank: usize, i: usize) -> BlockId {
    BlockId::from_u128(((tag as u128) << 96) | ((rank as u128) << 32) | i as u128 | 1 << 127)
}

/// Bytes no other block has: a rank- and index-specific pattern.
fn block(tag: u64, rank: usize, i: usize, len: usize) -> Vec<u8> {
    let mut x = tag ^ ((rank as u64) << 40) ^ ((i as u64) << 8) ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> TestResult {
    if condition { Ok(()) } else { Err(what()) }
}

fn put_all(cluster: &ClusterStore, items: &[(BlockId, Vec<u8>)]) -> TestResult {
    let refs: Vec<(BlockId, &[u8])> = items.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    for (i, r) in cluster.put_batch(&refs).into_iter().enumerate() {
        r.map_err(|e| format!("put {i}: {e}"))?;
    }
    Ok(())
}

fn remote_get(cluster: &ClusterStore) -> TestResult {
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let len = 128 * 1024;
    let mine: Vec<(BlockId, Vec<u8>)> = (0..24)
        .map(|i| (id_of(1, rank, i), block(1, rank, i, len)))
        .collect();
    put_all(cluster, &mine)?;
    cluster.barrier().map_err(|e| e.to_string())?;
    for other in (0..ranks).filter(|&r| r != rank) {
        // One block alone, then the rest in one batch.
        let mut out = vec![0u8; len];
        let got = cluster
            .get(id_of(1, other, 0), &mut out)
            .map_err(|e| e.to_string())?;
        ensure(got == Some(len) && out == block(1, other, 0, len), || {
            format!("single remote get from rank {other}: {got:?}")
        })?;
        let mut outs: Vec<Vec<u8>> = (1..24).map(|_| vec![0u8; len]).collect();
        let mut batch: Vec<(BlockId, &mut [u8])> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, o)| (id_of(1, other, i + 1), o.as_mut_slice()))
            .collect();
        for (i, r) in cluster.get_batch(&mut batch).into_iter().enumerate() {
            ensure(matches!(r, Ok(Some(n)) if n == len), || {
                format!("batch item {i}: {r:?}")
            })?;
        }
        for (i, out) in outs.iter().enumerate() {
            ensure(*out == block(1, other, i + 1, len), || {
                format!("block {} of rank {other} differs", i + 1)
            })?;
        }
    }
    let stats = cluster.stats();
    ensure(stats.remote_hits == 24 * (ranks as u64 - 1), || {
        format!("remote hits {stats:?}")
    })?;
    // Every rank of this job runs on this machine, and the blocks are in shm pools: with
    // direct reads on, each remote block was copied straight from its holder's pool.
    let direct = if cluster.direct_reads() {
        stats.remote_hits
    } else {
        0
    };
    ensure(stats.direct_hits == direct, || {
        format!(
            "direct hits (direct reads {}): {stats:?}",
            cluster.direct_reads()
        )
    })?;
    ensure(
        !cluster.local().contains(id_of(1, (rank + 1) % ranks, 0)),
        || "a remote read must not copy the block into this rank".into(),
    )?;
    // Over MPI, as between nodes: the same bytes, and no direct read.
    cluster.set_direct_reads(false);
    let other = (rank + 1) % ranks;
    let mut outs: Vec<Vec<u8>> = (0..24).map(|_| vec![0u8; len]).collect();
    let mut batch: Vec<(BlockId, &mut [u8])> = outs
        .iter_mut()
        .enumerate()
        .map(|(i, o)| (id_of(1, other, i), o.as_mut_slice()))
        .collect();
    let results = cluster.get_batch(&mut batch);
    cluster.set_direct_reads(direct > 0);
    for (i, (r, out)) in results.iter().zip(&outs).enumerate() {
        ensure(
            matches!(r, Ok(Some(n)) if *n == len) && *out == block(1, other, i, len),
            || format!("block {i} of rank {other} over MPI: {r:?}"),
        )?;
    }
    let after = cluster.stats();
    ensure(
        after.remote_hits == stats.remote_hits + 24 && after.direct_hits == stats.direct_hits,
        || format!("over MPI: before {stats:?}, after {after:?}"),
    )?;
    cluster.barrier().map_err(|e| e.to_string())
}

/// A block damaged in its holder's shm pool fails the direct read's checksum and then the
/// MPI fetch's: a miss, never the damaged bytes.
fn damaged_in_the_pool_is_a_miss(cluster: &ClusterStore, dir: &Path) -> TestResult {
    let before = cluster.stats();
    let rank = cluster.rank();
    // The pool file is the mapping's backing: the tier and every reader see the flip.
    damaged_block_is_a_miss(cluster, 9, |payload| {
        flip_a_byte_in(&dir.join(format!("shm-{rank}.pool")), payload)?
            .then_some(())
            .ok_or_else(|| "block bytes not found in the pool".to_string())
    })?;
    let after = cluster.stats();
    let direct = u64::from(cluster.direct_reads());
    ensure(
        after.direct_hits == before.direct_hits + direct
            && after.remote_hits == before.remote_hits + 1,
        || format!("only the intact block is a hit: before {before:?}, after {after:?}"),
    )?;
    cluster.barrier().map_err(|e| e.to_string())
}

/// Each rank puts four blocks (ids tagged `tag`), damages its own block 0 with `damage`
/// (given the block's bytes) and reads blocks 0 and 1 of the next rank: the damaged one
/// must be a miss, the intact one whole.
fn damaged_block_is_a_miss(
    cluster: &ClusterStore,
    tag: u64,
    damage: impl FnOnce(&[u8]) -> TestResult,
) -> TestResult {
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let len = 64 * 1024;
    let mine: Vec<(BlockId, Vec<u8>)> = (0..4)
        .map(|i| (id_of(tag, rank, i), block(tag, rank, i, len)))
        .collect();
    put_all(cluster, &mine)?;
    cluster.flush().map_err(|e| e.to_string())?;
    damage(&mine[0].1)?;
    cluster.barrier().map_err(|e| e.to_string())?;
    let other = (rank + 1) % ranks;
    let mut out = vec![0u8; len];
    let damaged = cluster
        .get(id_of(tag, other, 0), &mut out)
        .map_err(|e| e.to_string())?;
    ensure(damaged.is_none(), || {
        format!("a damaged remote block must be a miss: {damaged:?}")
    })?;
    let intact = cluster
        .get(id_of(tag, other, 1), &mut out)
        .map_err(|e| e.to_string())?;
    ensure(
        intact == Some(len) && out == block(tag, other, 1, len),
        || format!("intact: {intact:?}"),
    )
}

/// Flips one byte of `payload` where it lies in `file`, in place; false when its bytes
/// are not in the file.
fn flip_a_byte_in(file: &Path, payload: &[u8]) -> Result<bool, String> {
    use std::os::unix::fs::FileExt;
    let needle = &payload[1000..1064];
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return Ok(false);
    };
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(|e| e.to_string())?;
    opened
        .write_at(&[bytes[at + 10] ^ 0xFF], (at + 10) as u64)
        .map_err(|e| e.to_string())?;
    Ok(true)
}

fn dedup(cluster: &ClusterStore) -> TestResult {
    let len = 64 * 1024;
    // Every rank puts the same 32 blocks.
    let same: Vec<(BlockId, Vec<u8>)> = (0..32)
        .map(|i| (id_of(2, 0, i), block(2, 0, i, len)))
        .collect();
    put_all(cluster, &same)?;
    cluster.barrier().map_err(|e| e.to_string())?;
    let totals = cluster.totals().map_err(|e| e.to_string())?;
    ensure(
        totals.blocks == 32 && totals.bytes == 32 * len as u64,
        || format!("blocks put by every rank must be stored once: {totals:?}"),
    )?;
    ensure(
        totals.dedup_hits == 32 * (cluster.ranks() as u64 - 1),
        || format!("{totals:?}"),
    )?;
    for (id, data) in &same {
        let mut out = vec![0u8; len];
        let got = cluster.get(*id, &mut out).map_err(|e| e.to_string())?;
        ensure(got == Some(len) && out == *data, || {
            format!("{id}: {got:?}")
        })?;
    }
    // A second round changes nothing.
    put_all(cluster, &same)?;
    cluster.barrier().map_err(|e| e.to_string())?;
    let again = cluster.totals().map_err(|e| e.to_string())?;
    ensure(again.blocks == 32, || format!("{again:?}"))
}

fn lookup_prefix(cluster: &ClusterStore) -> TestResult {
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let chain: Vec<BlockId> = (0..16).map(|i| id_of(3, 0, i)).collect();
    // Keys 0..12 are stored, each by the rank i % ranks; 12.. by nobody.
    let mine: Vec<(BlockId, Vec<u8>)> = (0..12)
        .filter(|i| i % ranks == rank)
        .map(|i| (chain[i], block(3, 0, i, 4096)))
        .collect();
    put_all(cluster, &mine)?;
    cluster.barrier().map_err(|e| e.to_string())?;
    let found = cluster.lookup_prefix(&chain).map_err(|e| e.to_string())?;
    ensure(found == 12, || format!("lookup_prefix over ranks: {found}"))?;
    let mut holed = chain.clone();
    holed[5] = id_of(3, 9, 99);
    let found = cluster.lookup_prefix(&holed).map_err(|e| e.to_string())?;
    ensure(found == 5, || {
        format!("lookup_prefix with a hole at 5: {found}")
    })?;
    ensure(
        cluster.lookup_prefix(&[]).map_err(|e| e.to_string())? == 0,
        || "empty chain".into(),
    )?;
    ensure(
        cluster
            .contains(chain[(rank + 1) % ranks])
            .map_err(|e| e.to_string())?,
        || "contains sees other ranks' blocks".into(),
    )?;
    cluster.barrier().map_err(|e| e.to_string())
}

fn batches(cluster: &ClusterStore) -> TestResult {
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let len = 32 * 1024;
    let mine: Vec<(BlockId, Vec<u8>)> = (0..40)
        .map(|i| (id_of(4, rank, i), block(4, rank, i, len)))
        .collect();
    // A batch with one block twice: stored once, the second reported as deduplicated.
    let mut refs: Vec<(BlockId, &[u8])> = mine.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    refs.push(refs[0]);
    let outcomes = cluster.put_batch(&refs);
    ensure(outcomes.len() == 41, || "one result per item".into())?;
    ensure(matches!(outcomes[40], Ok(PutOutcome::Deduplicated)), || {
        format!("{:?}", outcomes[40])
    })?;
    cluster.barrier().map_err(|e| e.to_string())?;
    // One batch mixing local blocks, blocks of every other rank, a missing block and a
    // buffer too small.
    let other = (rank + 1) % ranks;
    let mut wanted: Vec<(BlockId, Vec<u8>)> = Vec::new();
    for i in 0..40 {
        let r = [rank, other][i % 2];
        wanted.push((id_of(4, r, i), block(4, r, i, len)));
    }
    let mut outs: Vec<Vec<u8>> = wanted.iter().map(|_| vec![0u8; len]).collect();
    outs.push(vec![0u8; len]);
    outs.push(vec![0u8; 16]);
    let mut batch: Vec<(BlockId, &mut [u8])> = wanted
        .iter()
        .map(|(id, _)| *id)
        .chain([id_of(4, 77, 0), id_of(4, other, 1)])
        .zip(outs.iter_mut())
        .map(|(id, o)| (id, o.as_mut_slice()))
        .collect();
    let results = cluster.get_batch(&mut batch);
    for (i, (_, data)) in wanted.iter().enumerate() {
        ensure(
            matches!(results[i], Ok(Some(n)) if n == len) && outs[i] == *data,
            || format!("mixed batch item {i}: {:?}", results[i]),
        )?;
    }
    ensure(matches!(results[40], Ok(None)), || {
        format!("missing block: {:?}", results[40])
    })?;
    ensure(
        matches!(&results[41], Err(e) if e.kind() == ErrorKind::InvalidInput),
        || format!("buffer too small: {:?}", results[41]),
    )?;
    cluster.barrier().map_err(|e| e.to_string())?;
    // Rank 0 removes one block of every rank, cluster-wide.
    if rank == 0 {
        for r in 0..ranks {
            let removed = cluster.remove(id_of(4, r, 39)).map_err(|e| e.to_string())?;
            ensure(removed, || format!("remove of rank {r}'s block"))?;
        }
    }
    cluster.barrier().map_err(|e| e.to_string())?;
    let mut out = vec![0u8; len];
    for r in 0..ranks {
        let got = cluster
            .get(id_of(4, r, 39), &mut out)
            .map_err(|e| e.to_string())?;
        ensure(got.is_none(), || {
            format!("a removed block was read: rank {r}")
        })?;
    }
    cluster.barrier().map_err(|e| e.to_string())
}

fn corrupt_remote_is_a_miss(cluster: &ClusterStore, base: &Path) -> TestResult {
    let rank = cluster.rank();
    // On disk, in the rank's file tier.
    damaged_block_is_a_miss(cluster, 5, |payload| {
        flip_a_byte_of(&base.join(rank.to_string()), payload)
    })?;
    cluster.barrier().map_err(|e| e.to_string())
}

/// Flips one byte of `payload` where it lies in a segment file under `dir`.
fn flip_a_byte_of(dir: &Path, payload: &[u8]) -> TestResult {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "seg") && flip_a_byte_in(&path, payload)? {
            return Ok(());
        }
    }
    Err(format!(
        "block bytes not found in the segments under {}",
        dir.display()
    ))
}

fn shared_file_tier(cluster: &ClusterStore) -> TestResult {
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let len = 16 * 1024;
    let mine: Vec<(BlockId, Vec<u8>)> = (0..8)
        .map(|i| (id_of(6, rank, i), block(6, rank, i, len)))
        .collect();
    put_all(cluster, &mine)?;
    cluster.flush().map_err(|e| e.to_string())?;
    cluster.barrier().map_err(|e| e.to_string())?;
    let report = cluster.refresh().map_err(|e| e.to_string())?;
    ensure(report.added == 8 * (ranks as u64 - 1), || {
        format!("refresh: {report:?}")
    })?;
    let before = cluster.stats().remote_hits;
    for r in 0..ranks {
        for i in 0..8 {
            let mut out = vec![0u8; len];
            let got = cluster
                .get(id_of(6, r, i), &mut out)
                .map_err(|e| e.to_string())?;
            ensure(got == Some(len) && out == block(6, r, i, len), || {
                format!("rank {r} block {i}")
            })?;
        }
    }
    ensure(cluster.stats().remote_hits == before, || {
        "blocks of the shared tier must be read locally after refresh".into()
    })?;
    cluster.barrier().map_err(|e| e.to_string())
}

const CRASH_BLOCKS: usize = 12;

fn crash_write(mpi: &Mpi, dir: &Path) -> TestResult {
    let cluster = open(mpi, &tiered_config(dir, true))?;
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let mine: Vec<(BlockId, Vec<u8>)> = (0..CRASH_BLOCKS)
        .map(|i| (id_of(7, rank, i), block(7, rank, i, 48 * 1024)))
        .collect();
    put_all(&cluster, &mine)?;
    cluster.flush().map_err(|e| e.to_string())?;
    cluster.barrier().map_err(|e| e.to_string())?;
    if rank == ranks - 1 {
        eprintln!("rank {rank}: killing itself after the flush");
        // SAFETY: raising SIGKILL on this process has no memory-safety preconditions.
        unsafe { libc_kill(std::process::id() as i32, 9) };
    }
    // The others wait here until the launcher ends the job.
    let _ = cluster.barrier();
    std::thread::sleep(Duration::from_secs(60));
    Err("the job went on after a rank died".into())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn crash_read(mpi: &Mpi, dir: &Path) -> TestResult {
    let cluster = open(mpi, &tiered_config(dir, true))?;
    let ranks = cluster.ranks();
    for r in 0..ranks {
        for i in 0..CRASH_BLOCKS {
            let len = 48 * 1024;
            let mut out = vec![0u8; len];
            let got = cluster
                .get(id_of(7, r, i), &mut out)
                .map_err(|e| e.to_string())?;
            ensure(got == Some(len) && out == block(7, r, i, len), || {
                format!("after the relaunch, block {i} of rank {r}: {got:?}")
            })?;
        }
    }
    cluster.close().map_err(|e| e.to_string())
}
