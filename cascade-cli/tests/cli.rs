//! Runs the `cascade` binary on a real deployment (memory over a file tier) and checks
//! what it prints and what it changes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cascade::{BlockId, Cascade};
use serde_json::Value;

const BLOCK: usize = 200 << 10;
const BLOCKS: u128 = 12;

/// A deployment in `dir`: 1 MiB of memory over a 64 MiB file tier, holding `BLOCKS`
/// blocks of 200 KiB in its file tier.
fn deployment(dir: &Path) -> PathBuf {
    let config = dir.join("cascade.toml");
    std::fs::write(
        &config,
        format!(
            "[[tiers]]\nkind = \"memory\"\ncapacity = \"1 MiB\"\n\n[[tiers]]\nkind = \"file\"\npath = {:?}\ncapacity = \"64 MiB\"\nsegment_size = \"1 MiB\"\nbackground_compaction = false\n",
            dir.join("kv").display().to_string()
        ),
    )
    .expect("write config");
    let store = Cascade::open_toml_file(&config).expect("open");
    for n in 0..BLOCKS {
        store
            .put(BlockId::from_u128(n + 1), &block(n))
            .expect("put");
    }
    // Demote everything the memory tier still holds, so the file tier has every block.
    store.free_up(0, 1 << 20).expect("free_up");
    store.flush().expect("flush");
    config
}

fn block(n: u128) -> Vec<u8> {
    (0..BLOCK).map(|i| (i as u128 ^ (n * 7919)) as u8).collect()
}

fn cascade(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run cascade")
}

fn json(config: &Path, args: &[&str]) -> (Value, i32) {
    let output = cascade(config, &[args, &["--json"]].concat());
    let text = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (value, output.status.code().unwrap_or(-1))
}

fn file_blocks(config: &Path) -> u64 {
    let (info, code) = json(config, &["info"]);
    assert_eq!(code, 0);
    info["tiers"][1]["blocks"].as_u64().expect("blocks")
}

#[test]
fn info_ls_verify_repair_evict_compact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(dir.path());

    let (info, code) = json(&config, &["info"]);
    assert_eq!(code, 0, "{info}");
    assert_eq!(info["tiers"][1]["kind"], "file");
    assert_eq!(info["tiers"][1]["persistent"], true);
    assert_eq!(info["tiers"][1]["blocks"], BLOCKS as u64);
    assert_eq!(info["tiers"][1]["capacity_bytes"], 64u64 << 20);
    assert_eq!(info["tiers"][0]["persistent"], false);
    let table = String::from_utf8_lossy(&cascade(&config, &["info"]).stdout).into_owned();
    assert!(
        table.contains("file1") && table.contains("64.0 MiB"),
        "{table}"
    );

    let (ls, _) = json(&config, &["ls", "--tier", "file1"]);
    let blocks = ls["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), BLOCKS as usize);
    assert!(
        blocks
            .iter()
            .all(|b| b["size"] == BLOCK as u64 && b["tier"] == "file1")
    );
    assert!(
        blocks.iter().all(|b| b["age_seconds"]
            .as_f64()
            .is_some_and(|a| (0.0..600.0).contains(&a))),
        "{ls}"
    );
    let (limited, _) = json(&config, &["ls", "--limit", "3"]);
    assert_eq!(limited["blocks"].as_array().map(Vec::len), Some(3));
    assert_eq!(limited["total"], BLOCKS as u64);

    let (clean, code) = json(&config, &["verify"]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["tiers"][0]["blocks"], BLOCKS as u64);
    assert_eq!(clean["tiers"][0]["bytes"], BLOCKS as u64 * BLOCK as u64);

    // Damage one block's payload on disk.
    let victim = BlockId::from_u128(5);
    let (segment, offset) = {
        let settings = cascade::lustre::FileTierConfig::new(dir.path().join("kv"));
        let tier = cascade::lustre::FileTier::open("probe", &settings).expect("open tier");
        tier.location(victim).expect("stored")
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("segment");
    file.write_all_at(b"garbage", offset + 64 + 1000)
        .expect("damage");
    drop(file);

    let (found, code) = json(&config, &["verify"]);
    assert_eq!(code, 1, "damage left in place fails the command: {found}");
    let damaged = found["tiers"][0]["damaged"].as_array().expect("damaged");
    assert_eq!(damaged.len(), 1, "{found}");
    assert_eq!(damaged[0]["id"], victim.to_string());
    assert_eq!(damaged[0]["reason"], "checksum mismatch");
    assert_eq!(damaged[0]["dropped"], false);
    assert_eq!(
        file_blocks(&config),
        BLOCKS as u64,
        "verify alone drops nothing"
    );
    let text = String::from_utf8_lossy(&cascade(&config, &["verify"]).stdout).into_owned();
    assert!(text.contains("--repair"), "{text}");

    let (repaired, code) = json(&config, &["verify", "--repair"]);
    assert_eq!(code, 0, "{repaired}");
    assert_eq!(repaired["tiers"][0]["damaged"][0]["dropped"], true);
    assert_eq!(file_blocks(&config), BLOCKS as u64 - 1);
    let (again, code) = json(&config, &["verify"]);
    assert_eq!(code, 0);
    assert_eq!(
        again["tiers"][0]["damaged"].as_array().map(Vec::len),
        Some(0)
    );

    // The file tier is the last: evicting there drops its coldest blocks.
    let (evicted, code) = json(&config, &["evict", "--tier", "file1", "--bytes", "500 KiB"]);
    assert_eq!(code, 0, "{evicted}");
    assert!(
        evicted["freed_bytes"].as_u64().expect("freed") >= 500 << 10,
        "{evicted}"
    );
    let dropped = evicted["dropped_blocks"].as_u64().expect("dropped");
    assert!(dropped >= 2, "{evicted}");
    assert_eq!(
        file_blocks(&config),
        BLOCKS as u64 - 1 - dropped,
        "eviction persists"
    );

    let (compacted, code) = json(&config, &["compact"]);
    assert_eq!(code, 0, "{compacted}");
    assert_eq!(compacted["tiers"][0]["tier"], "file1");
    // Every block left still reads back intact.
    let store = Cascade::open_toml_file(&config).expect("reopen");
    let mut out = vec![0u8; BLOCK];
    let mut left = 0;
    for n in 0..BLOCKS {
        if let Some(len) = store.get(BlockId::from_u128(n + 1), &mut out).expect("get") {
            assert_eq!(&out[..len], &block(n)[..]);
            left += 1;
        }
    }
    assert_eq!(left, BLOCKS as u64 - 1 - dropped);
}

#[test]
fn metrics_are_served_over_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["metrics", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start cascade metrics");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let scraped = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect(&addr)?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })();
    let _ = child.kill();
    let _ = child.wait();
    let text = scraped.expect("scrape");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(&format!(
            "cascade_tier_blocks{{tier=\"file1\",kind=\"file\"}} {BLOCKS}"
        )),
        "{text}"
    );
    assert!(
        text.contains("# TYPE cascade_get_duration_seconds histogram"),
        "{text}"
    );
}

#[test]
fn a_deployment_that_does_not_open_fails_with_its_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[tiers]]\nkind = \"memory\"\ncapacity = -1\n").expect("write");
    let output = cascade(&bad, &["info"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("capacity must be a size like 64 GiB or a number of bytes, got -1"),
        "{stderr}"
    );
    let missing = cascade(&dir.path().join("none.toml"), &["ls"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("none.toml"));
    let output = cascade(&bad, &["evict", "--tier", "x", "--bytes", "lots"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("must be a size like 64 GiB"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
