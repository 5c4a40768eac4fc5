//! `cascade-bench`: the documented benchmark tables of a Cascade deployment, measured
//! against hardware limits and peers in the same run.
//!
//! Every section builds its stores through the facade ([`cascade::Cascade::open`]) from
//! the deployment's TOML, one tier kind at a time (`memory`, `shm`, `file`, `gpu`), so a
//! tier joins the tables as soon as this build knows its kind; a kind that is not built
//! in, or not available on the machine, gets a row that says why.

pub mod args;
pub mod bench;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod cold_read;
pub mod dataset;
pub mod dedup;
pub mod hashing;
pub mod latency;
pub mod limits;
pub mod machine;
pub mod measure;
pub mod overflow;
pub mod peers;
pub mod progress;
pub mod reopen;
pub mod report;
pub mod scaling;
pub mod setup;
pub mod stats;
pub mod tiers;

use std::time::Instant;

use cascade::Result;

pub use args::{Args, Section, TierChoice};
pub use report::Report;

use bench::Bench;
use dataset::Dataset;
use peers::CascadeFigures;
use progress::Progress;

/// Seed of the main data set's contents and ids.
const SEED: u64 = 0xCA5C_ADE0;

/// Runs every selected section and returns the report; `command` is shown in its header.
pub fn run(args: Args, command: String, progress: Progress) -> Result<Report> {
    args.validate()?;
    let started = Instant::now();
    let sections = args.sections();
    let kinds = args.tier.kinds();
    let threads = args.threads;
    let mut bench = Bench::new(args, progress)?;
    let mut ds = Dataset::new(bench.args.blocks, bench.args.block_size(), SEED)?;
    let mut report = Report {
        command,
        machine: machine::Machine::detect(),
        date: machine::utc_now(),
        settings: report::RunSettings {
            blocks: bench.args.blocks,
            block_size: bench.args.block_size(),
            threads,
            repeat: bench.args.repeat,
            batch: bench.args.batch,
            deployment: bench.deployment.source.clone(),
        },
        tiers: None,
        file: None,
        scaling: None,
        overflow: None,
        dedup: None,
        latency: None,
        hash: None,
        peers: None,
        ratios: Vec::new(),
        section_seconds: Vec::new(),
        wall_seconds: 0.0,
    };
    for section in sections {
        let section_start = Instant::now();
        match section {
            Section::Tiers => report.tiers = Some(tiers::run(&bench, &mut ds, &kinds, threads)),
            Section::File => report.file = Some(cold_read::run(&bench, &mut ds, &kinds)),
            Section::Scaling => report.scaling = Some(scaling::run(&bench, &mut ds)),
            Section::Overflow => report.overflow = Some(overflow::run(&mut bench, &mut ds)),
            Section::Dedup => report.dedup = Some(dedup::run(&bench, ds.block_size())),
            Section::Latency => report.latency = Some(latency::run(&bench, &mut ds, &kinds)),
            Section::Hash => report.hash = Some(hashing::run(&bench, &ds)),
            Section::Peers => {
                let table = peers::run(&mut bench, &mut ds);
                let rows = report.tiers.get_or_insert_with(Vec::new);
                let mut figures = cascade_figures(&bench, &mut ds, rows, threads);
                figures.file_same_round = report
                    .file
                    .as_ref()
                    .and_then(cold_read::FileTable::same_round);
                report.ratios = peers::ratios(figures.as_ref(), &table);
                report.peers = Some(table);
            }
        }
        report.section_seconds.push((
            format!("{section:?}").to_lowercase(),
            section_start.elapsed().as_secs_f64(),
        ));
    }
    let cleanup = Instant::now();
    drop(bench);
    report
        .section_seconds
        .push(("cleanup".into(), cleanup.elapsed().as_secs_f64()));
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Cascade's side of the peer ratios, owned.
struct Figures {
    host: Option<(String, f64, f64)>,
    file: Option<(f64, f64)>,
    file_same_round: Option<peers::SameRound>,
}

impl Figures {
    fn as_ref(&self) -> CascadeFigures<'_> {
        CascadeFigures {
            host: self.host.as_ref().map(|(k, w, r)| (k.as_str(), *w, *r)),
            file: self.file,
            file_same_round: self.file_same_round,
        }
    }
}

/// Takes the shm (else memory) and file rows from the per-tier table, measuring (and
/// adding to the table) whichever is missing.
fn cascade_figures(
    bench: &Bench,
    ds: &mut Dataset,
    rows: &mut Vec<tiers::TierRow>,
    threads: usize,
) -> Figures {
    let host_kind = if setup::not_compiled_reason("shm").is_none() {
        "shm"
    } else {
        "memory"
    };
    for kind in [host_kind, "file"] {
        if !rows.iter().any(|r| r.kind == kind) {
            rows.extend(tiers::run(bench, ds, &[kind], threads));
        }
    }
    let medians = |kind: &str| {
        rows.iter()
            .find(|r| r.kind == kind && r.skipped.is_none())
            .and_then(|r| Some((r.write_gbps.as_ref()?.median, r.read_gbps.as_ref()?.median)))
    };
    Figures {
        host: medians(host_kind).map(|(w, r)| (host_kind.to_string(), w, r)),
        file: medians("file"),
        file_same_round: None,
    }
}
