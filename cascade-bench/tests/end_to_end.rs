//! Runs the real binary on tiny data sets and checks the JSON it writes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs the binary with `args`, its data and its JSON report in `data_dir`; asserts it
/// succeeded and returns the report and what it printed.
fn run_json(data_dir: &Path, args: &[&str]) -> (Value, String) {
    let json = data_dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_cascade-bench"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run cascade-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cascade-bench failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let report = serde_json::from_str(&text).expect("JSON report parses");
    (report, stdout)
}

/// A run on 48 blocks of 16 KiB with `extra` on top.
fn run_bench(data_dir: &Path, extra: &[&str]) -> Value {
    let small = [
        "--blocks",
        "48",
        "--size",
        "16KiB",
        "--threads",
        "2",
        "--repeat",
        "1",
        "--batch",
        "8",
        "--latency-ops",
        "20",
        "--no-progress",
        "--reopen-blocks",
        "0",
    ];
    let (report, stdout) = run_json(data_dir, &[&small[..], extra].concat());
    assert!(stdout.contains("# cascade-bench"), "{stdout}");
    report
}

/// Runs the binary with `args`, asserts it failed, and returns what it printed on stderr.
fn run_failing(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cascade-bench"))
        .args(args)
        .output()
        .expect("run cascade-bench");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run removed its data folder: only the JSON report is left in `dir`.
fn assert_only_report_left(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "report.json")
        .collect();
    assert!(
        leftovers.is_empty(),
        "the run's data folder is removed: {leftovers:?}"
    );
}

fn median(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}

#[test]
fn memory_tier_run_writes_every_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run_bench(dir.path(), &["--tier", "memory"]);

    assert_eq!(report["settings"]["blocks"], 48);
    assert_eq!(report["settings"]["block_size"], 16 * 1024);

    let tiers = report["tiers"].as_array().expect("tiers table");
    assert_eq!(tiers.len(), 1);
    let memory = &tiers[0];
    assert_eq!(memory["kind"], "memory");
    assert!(memory.get("skipped").is_none(), "{memory}");
    assert!(median(&memory["write_gbps"]) > 0.0 && median(&memory["read_gbps"]) > 0.0);
    assert!(
        median(&memory["limit"]["read_gbps"]) > 0.0,
        "memcpy limit measured in the same run"
    );
    assert!(memory["read_efficiency"].as_f64().is_some());

    let scaling = &report["scaling"];
    assert_eq!(scaling["kind"], "memory");
    let threads: Vec<u64> = scaling["rows"]
        .as_array()
        .expect("scaling rows")
        .iter()
        .filter_map(|r| r["threads"].as_u64())
        .collect();
    assert_eq!(threads, vec![1, 2]);

    // The overflow table needs the file tier: rows when it is built in, a reason when not.
    let overflow = &report["overflow"];
    let rows = overflow["rows"].as_array().map_or(0, Vec::len);
    assert!(rows == 4 || overflow["skipped"].is_string(), "{overflow}");

    let dedup = &report["dedup"];
    assert!(dedup.get("skipped").is_none(), "{dedup}");
    let logical = dedup["logical_bytes"].as_u64().expect("logical bytes");
    let stored = dedup["stored_bytes"].as_u64().expect("stored bytes");
    let saved = dedup["bytes_saved"].as_u64().expect("bytes saved");
    assert_eq!(
        logical,
        stored + saved,
        "every byte put is either stored or saved"
    );
    assert_eq!(
        stored,
        dedup["unique_blocks"].as_u64().expect("unique") * 16 * 1024
    );
    let ratio = dedup["dedup_ratio"].as_f64().expect("ratio");
    assert!((ratio - dedup["expected_ratio"].as_f64().expect("expected")).abs() < 1e-9);

    let latency = report["latency"].as_array().expect("latency table");
    assert_eq!(latency[0]["ops"], 20);
    assert!(
        latency[0]["get_p99_us"].as_f64().expect("p99")
            >= latency[0]["get_p50_us"].as_f64().expect("p50")
    );

    let hashes: Vec<&str> = report["hash"]
        .as_array()
        .expect("hash table")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(hashes, vec!["SHA-256", "BLAKE3", "xxh3-64"]);
    assert!(report.get("peers").is_none(), "peers only with --peers");
    assert!(
        report["file"]["skipped"]
            .as_str()
            .unwrap_or_default()
            .contains("--tier"),
        "the file section needs the file tier: {}",
        report["file"]
    );

    assert_only_report_left(dir.path());
}

#[test]
fn absent_peers_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run_bench(
        dir.path(),
        &[
            "--tier",
            "memory",
            "--section",
            "tiers",
            "--peers",
            "--redis-server",
            "/nonexistent/redis-server",
            "--python",
            "/nonexistent/python3",
        ],
    );
    let rows = report["peers"]["rows"].as_array().expect("peers table");
    let redis = rows
        .iter()
        .find(|r| r["peer"] == "Redis")
        .expect("redis row");
    assert!(
        redis["skipped"]
            .as_str()
            .unwrap_or_default()
            .contains("install-peers.sh"),
        "{redis}"
    );
    let hdf5: Vec<&Value> = rows.iter().filter(|r| r["peer"] == "HDF5").collect();
    assert_eq!(hdf5.len(), 2);
    assert!(hdf5.iter().all(|r| r["skipped"].is_string()), "{hdf5:?}");
    // One file per block needs nothing installed, so it is always measured.
    let files = rows
        .iter()
        .find(|r| r["peer"] == "one file per block")
        .expect("files row");
    assert!(files.get("skipped").is_none(), "{files}");
    assert!(median(&files["read_gbps"]) > 0.0);
}

#[test]
fn bad_arguments_fail_with_a_message() {
    assert!(run_failing(&["--size", "0"]).contains("greater than zero"));
}

#[test]
fn config_file_is_the_deployment_under_test() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("deploy.toml");
    std::fs::write(
        &config,
        "hasher = \"blake3\"\n[[tiers]]\nkind = \"memory\"\ncapacity = \"64 MiB\"\n",
    )
    .expect("write config");
    let config_arg = config.display().to_string();
    let report = run_bench(
        dir.path(),
        &["--config", &config_arg, "--section", "dedup,scaling"],
    );
    assert_eq!(report["settings"]["deployment"], config_arg.as_str());
    assert_eq!(report["dedup"]["hasher"], "blake3");
    assert_eq!(
        report["scaling"]["kind"], "memory",
        "the deployment's fastest tier is scaled"
    );
    assert!(
        report.get("tiers").is_none(),
        "only the selected sections run"
    );

    let missing = run_failing(&["--config", "/nonexistent/cascade.toml", "--no-progress"]);
    assert!(missing.contains("config"), "{missing}");
}

#[test]
fn a_deployment_that_does_not_open_fails_the_run_with_its_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[[tiers]]\nkind = \"flie\"\npath = \"x\"\n",
            "unknown tier kind \"flie\"",
        ),
        (
            "[[tiers]]\nkind = \"memory\"\ncapacity = \"64 MiB\"\n[[tiers]]\nkind = \"plugin\"\npath = \"/nonexistent/libcascade_x.so\"\n",
            "/nonexistent/libcascade_x.so",
        ),
        (
            "[[tiers]]\nkind = \"memory\"\ncapacity = -1\n",
            "capacity must be a size like 64 GiB or a number of bytes, got -1",
        ),
    ];
    for (n, (toml, want)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad{n}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let config_arg = config.display().to_string();
        let data = dir.path().join(format!("data{n}"));
        std::fs::create_dir(&data).expect("data dir");
        let stderr = run_failing(&[
            "--config",
            &config_arg,
            "--section",
            "tiers",
            "--no-progress",
            "--data-dir",
            &data.display().to_string(),
        ]);
        assert!(stderr.contains(want), "{stderr}");
        assert!(
            stderr.contains(&config_arg),
            "names the deployment: {stderr}"
        );
    }
}

#[test]
fn file_section_measures_every_layout_in_the_same_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run_bench(dir.path(), &["--tier", "file", "--section", "file"]);
    let table = &report["file"];
    assert!(
        report.get("tiers").is_none(),
        "only the file section ran: {report}"
    );
    if table["skipped"].is_string() {
        // A build without the file tier says why instead.
        assert!(
            table["skipped"]
                .as_str()
                .unwrap_or_default()
                .contains("not in this build"),
            "{table}"
        );
        return;
    }
    let layouts: Vec<&str> = table["layouts"]
        .as_array()
        .expect("layout rows")
        .iter()
        .filter_map(|r| r["layout"].as_str())
        .collect();
    assert_eq!(
        layouts,
        vec![
            "file_tier",
            "one_file_per_block",
            "raw_buffered",
            "raw_direct"
        ]
    );
    for row in table["layouts"].as_array().expect("layout rows") {
        assert!(median(&row["write_gbps"]) > 0.0, "{row}");
        assert!(median(&row["cold_read_gbps"]) > 0.0, "{row}");
        assert_eq!(
            row["cold_read_gbps"]["values"].as_array().map(Vec::len),
            Some(1)
        );
    }
    let ratios = table["ratios"].as_array().expect("ratios");
    let files = ratios
        .iter()
        .find(|r| r["baseline"] == "one_file_per_block" && r["direction"] == "cold_read")
        .expect("ratio against one file per block");
    assert!(median(&files["ratio"]) > 0.0);
    assert_eq!(files["goal"], 1.5);
    assert!(files["met"].is_boolean());
    let ceiling = table["raw_ceiling"].as_str().expect("raw ceiling named");
    let judged: Vec<&Value> = ratios.iter().filter(|r| r["goal"] == 0.8).collect();
    assert_eq!(judged.len(), 1, "{ratios:?}");
    assert_eq!(judged[0]["baseline"], ceiling);
    assert_eq!(table["round_orders"].as_array().map(Vec::len), Some(1));
    assert!(
        table["reopen"]["skipped"]
            .as_str()
            .unwrap_or_default()
            .contains("--reopen-blocks 0"),
        "{table}"
    );
    assert!(table["reopen"].get("cold_ms").is_none(), "{table}");

    assert_only_report_left(dir.path());
}

/// The file section's run with `extra` on top of the usual small settings, or `None` when
/// this build has no file tier (the section then says why and measures nothing).
fn file_section(dir: &Path, extra: &[&str]) -> Option<(Value, String)> {
    let small = ["--blocks", "16", "--size", "16KiB", "--threads", "2"];
    let rest = ["--repeat", "1", "--batch", "8", "--no-progress"];
    let file = ["--tier", "file", "--section", "file"];
    let (report, stdout) = run_json(dir, &[&small[..], &rest, &file, extra].concat());
    let skipped = report["file"]["skipped"].as_str().unwrap_or_default();
    if skipped.contains("not in this build") {
        let reopen = &report["file"]["reopen"];
        assert_eq!(reopen["skipped"], skipped, "{reopen}");
        return None;
    }
    Some((report, stdout))
}

#[test]
fn file_section_reopens_a_directory_of_small_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((report, stdout)) = file_section(dir.path(), &["--reopen-blocks", "200"]) else {
        return;
    };
    let reopen = &report["file"]["reopen"];
    assert!(reopen.get("skipped").is_none(), "{reopen}");
    assert_eq!(reopen["blocks"], 200);
    assert_eq!(reopen["block_bytes"], 4096 - 64);
    assert_eq!(reopen["goal_ms"], 1000.0);
    assert!(
        reopen["segments"].as_u64().expect("segments") >= 1,
        "{reopen}"
    );
    for key in ["cold_ms", "warm_ms"] {
        let samples = &reopen[key];
        assert_eq!(
            samples["values"].as_array().map(Vec::len),
            Some(1),
            "{reopen}"
        );
        assert!(median(samples) > 0.0, "{reopen}");
    }
    assert!(reopen["met"].is_boolean(), "{reopen}");
    assert!(reopen["note"].as_str().unwrap_or_default().contains("cold"));

    let section = stdout
        .split("### File tier reopen")
        .nth(1)
        .expect("reopen table under the file section");
    assert!(section.contains("200 blocks of 4032 bytes"), "{section}");
    let row = section
        .lines()
        .find(|l| l.starts_with("| 200 |"))
        .expect("a row for 200 blocks");
    assert!(row.contains("< 1000 ms (cold median)"), "{row}");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let cold: f64 = cells[3].parse().expect("cold ms");
    let warm: f64 = cells[4].parse().expect("warm ms");
    assert!(cold >= 0.0 && warm >= 0.0, "{row}");

    assert_only_report_left(dir.path());
}
