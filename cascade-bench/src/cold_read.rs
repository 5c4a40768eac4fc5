//! The file tier's cold read judged the way its goals are stated: against one file per
//! block (the layout of LMCache's local disk backend) and against a raw sequential read
//! of one file of the same total size, all measured in the same rounds.
//!
//! This machine's disk swings between about 1.3 and 3.4 GB/s within seconds, so a ratio
//! of figures taken minutes apart says little. Each round therefore measures every
//! layout back to back, in an order that rotates from round to round, and the goals are
//! judged on the median of the per-round ratios.

use cascade::Result;
use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::Dataset;
use crate::limits::{self, BUFFERED_CHUNK, DIRECT_CHUNK, DirectMode};
use crate::peers::{SameRound, files};
use crate::reopen::{self, ReopenTable};
use crate::setup::{self, is_file_kind};
use crate::stats::{Samples, gbps};
use crate::tiers;

pub use crate::peers::files::FILES_GOAL;
/// Goal: the file tier's cold read over the faster raw sequential read of one file.
pub const RAW_GOAL: f64 = 0.8;

/// A way of storing the data set's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The file tier alone in a store, through `put_batch` / `get_batch`.
    FileTier,
    /// One file per block.
    OneFilePerBlock,
    /// One file of the same total size, read start to end through the page cache.
    RawBuffered,
    /// One file of the same total size, read with O_DIRECT.
    RawDirect,
}

/// Every layout, in the order of the warm-up round.
pub const LAYOUTS: [Layout; 4] = [
    Layout::FileTier,
    Layout::OneFilePerBlock,
    Layout::RawBuffered,
    Layout::RawDirect,
];

impl Layout {
    /// Its position in [`LAYOUTS`] and in a [`Round`]'s arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Layout::FileTier => "file tier",
            Layout::OneFilePerBlock => "one file per block",
            Layout::RawBuffered => "raw sequential file (buffered)",
            Layout::RawDirect => "raw sequential file (O_DIRECT)",
        }
    }
}

/// The layouts in the order round `round` measures them (round 0 is the warm-up): the
/// order rotates by one each round, so no layout always goes first.
pub fn round_order(round: usize) -> [Layout; 4] {
    let mut order = LAYOUTS;
    order.rotate_left(round % LAYOUTS.len());
    order
}

/// Write and cold-read GB/s of every layout in one round, indexed by [`Layout::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Round {
    /// Write GB/s.
    pub write: [f64; 4],
    /// Cold read GB/s.
    pub read: [f64; 4],
}

/// Which figure a ratio compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Write GB/s.
    Write,
    /// Cold read GB/s.
    ColdRead,
}

/// One layout's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LayoutRow {
    /// The layout.
    pub layout: Layout,
    /// How it was written and read.
    pub description: String,
    /// Write GB/s per round (the write includes making the data durable).
    pub write_gbps: Samples,
    /// Cold read GB/s per round.
    pub cold_read_gbps: Samples,
}

/// The file tier over another layout, round by round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRatio {
    /// What is compared, in words.
    pub what: String,
    /// The layout the file tier is compared with.
    pub baseline: Layout,
    /// Which figure is compared.
    pub direction: Direction,
    /// File tier over `baseline` in each round, and their median (the figure judged).
    pub ratio: Samples,
    /// The goal, where the issue sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<f64>,
    /// Whether the median meets the goal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// The "File tier cold read" table.
#[derive(Debug, Clone, Serialize)]
pub struct FileTable {
    /// Threads of the pool every layout but the buffered raw read ran on.
    pub threads: usize,
    /// Blocks per `put_batch` / `get_batch` call of the file tier.
    pub batch: usize,
    /// How the rounds were made and the goals judged.
    pub note: String,
    /// Why there are no figures, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// One row per layout, in [`LAYOUTS`] order.
    pub layouts: Vec<LayoutRow>,
    /// The file tier over each baseline: medians of per-round ratios.
    pub ratios: Vec<RoundRatio>,
    /// The raw read the 80% goal is judged against: the faster of the two (by median).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_ceiling: Option<Layout>,
    /// The order each timed round measured the layouts in.
    pub round_orders: Vec<Vec<Layout>>,
    /// The time to reopen a directory of many small blocks (skipped with its reason
    /// when the section or `--reopen-blocks 0` turns it off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopen: Option<ReopenTable>,
}

impl FileTable {
    fn empty(threads: usize, batch: usize) -> Self {
        Self {
            threads,
            batch,
            note: format!(
                "Cold: before each read the layout's files are synced and dropped from the page \
                 cache (posix_fadvise DONTNEED); the O_DIRECT read bypasses it. One untimed \
                 warm-up round, then the timed rounds; each round measures all four layouts \
                 back to back, each in a fresh folder, in an order that rotates from round to \
                 round, with sync(2) before each timed phase. Ratios are medians of per-round \
                 ratios; the {:.0}% goal is judged against the faster of the two raw reads.",
                RAW_GOAL * 100.0
            ),
            skipped: None,
            layouts: Vec::new(),
            ratios: Vec::new(),
            raw_ceiling: None,
            round_orders: Vec::new(),
            reopen: None,
        }
    }

    /// The file tier against one file per block, for the "Cascade / peer" table.
    pub fn same_round(&self) -> Option<SameRound> {
        let row = |layout: Layout| self.layouts.iter().find(|r| r.layout == layout);
        let ratio = |direction: Direction| {
            self.ratios
                .iter()
                .find(|r| r.baseline == Layout::OneFilePerBlock && r.direction == direction)
                .map(|r| r.ratio.median)
        };
        let tier = row(Layout::FileTier)?;
        let files = row(Layout::OneFilePerBlock)?;
        Some(SameRound {
            cascade: (tier.write_gbps.median, tier.cold_read_gbps.median),
            files: (files.write_gbps.median, files.cold_read_gbps.median),
            ratio: (ratio(Direction::Write)?, ratio(Direction::ColdRead)?),
        })
    }
}

/// Why the table cannot run with these `--tier` kinds in this build, if it cannot.
pub fn skip_reason(kinds: &[&str]) -> Option<String> {
    if !kinds.iter().any(|k| is_file_kind(k)) {
        return Some(format!(
            "--tier selects {} only; the file tier is needed (--tier file or all)",
            kinds.join(", ")
        ));
    }
    setup::not_compiled_reason("file")
}

/// Measures the table with `--threads` threads for the tier kinds `--tier` selects.
pub fn run(bench: &Bench, ds: &mut Dataset, kinds: &[&str]) -> FileTable {
    let mut table = FileTable::empty(bench.args.threads, bench.batch());
    if let Some(reason) = skip_reason(kinds) {
        table.reopen = Some(reopen::run(bench, Some(&reason)));
        table.skipped = Some(reason);
        return table;
    }
    match measure_rounds(bench, ds) {
        Ok(measured) => {
            let descriptions = descriptions(bench, measured.direct_mode);
            let (layouts, ratios, ceiling) = summarize(&measured.rounds, &descriptions);
            table.layouts = layouts;
            table.ratios = ratios;
            table.raw_ceiling = Some(ceiling);
            table.round_orders = measured.orders;
        }
        Err(e) => table.skipped = Some(format!("could not be measured: {e}")),
    }
    table.reopen = Some(reopen::run(bench, None));
    table
}

/// How each layout was written and read, in [`LAYOUTS`] order.
fn descriptions(bench: &Bench, direct_mode: DirectMode) -> [String; 4] {
    let threads = bench.args.threads;
    let direct = match direct_mode {
        DirectMode::Direct => String::new(),
        DirectMode::Buffered => {
            " (the file system refused O_DIRECT: buffered, synced, cache dropped)".into()
        }
    };
    [
        format!(
            "the file tier alone in a store (deployment settings), put_batch / get_batch of {} \
             blocks on {threads} threads; the write includes the flush",
            bench.batch()
        ),
        format!(
            "one file per block (LMCache's local disk layout), {threads} threads; the write \
             includes a syncfs"
        ),
        format!(
            "one file, {} MiB writes then fsync, then {} MiB reads start to end on 1 thread \
             (kernel readahead, as dd or cat)",
            BUFFERED_CHUNK >> 20,
            BUFFERED_CHUNK >> 20
        ),
        format!(
            "one file, O_DIRECT {} MiB requests over {threads} threads, fsync in the \
             write{direct}",
            DIRECT_CHUNK >> 20
        ),
    ]
}

/// The per-layout medians, the per-round ratios of the file tier over each baseline with
/// their goals, and the raw read the 80% goal is judged against.
pub fn summarize(
    rounds: &[Round],
    descriptions: &[String; 4],
) -> (Vec<LayoutRow>, Vec<RoundRatio>, Layout) {
    let column = |figures: fn(&Round) -> &[f64; 4], layout: Layout| {
        Samples::new(rounds.iter().map(|r| figures(r)[layout.index()]).collect())
    };
    let layouts: Vec<LayoutRow> = LAYOUTS
        .iter()
        .zip(descriptions)
        .map(|(&layout, description)| LayoutRow {
            layout,
            description: description.clone(),
            write_gbps: column(|r| &r.write, layout),
            cold_read_gbps: column(|r| &r.read, layout),
        })
        .collect();
    let read_median = |layout: Layout| layouts[layout.index()].cold_read_gbps.median;
    let ceiling = if read_median(Layout::RawDirect) > read_median(Layout::RawBuffered) {
        Layout::RawDirect
    } else {
        Layout::RawBuffered
    };
    let per_round = |direction: Direction, baseline: Layout, goal: Option<f64>| {
        let values: Vec<f64> = rounds
            .iter()
            .filter_map(|r| {
                let figures = match direction {
                    Direction::Write => &r.write,
                    Direction::ColdRead => &r.read,
                };
                crate::stats::ratio(figures[Layout::FileTier.index()], figures[baseline.index()])
            })
            .collect();
        let ratio = Samples::new(values);
        let what = match direction {
            Direction::Write => format!("file tier write / {} write", baseline.name()),
            Direction::ColdRead => format!("file tier cold read / {} cold read", baseline.name()),
        };
        RoundRatio {
            what,
            baseline,
            direction,
            met: goal.map(|g| !ratio.values.is_empty() && ratio.median >= g),
            ratio,
            goal,
        }
    };
    let raw_goal = |layout: Layout| (layout == ceiling).then_some(RAW_GOAL);
    let ratios = vec![
        per_round(
            Direction::ColdRead,
            Layout::OneFilePerBlock,
            Some(FILES_GOAL),
        ),
        per_round(
            Direction::ColdRead,
            Layout::RawBuffered,
            raw_goal(Layout::RawBuffered),
        ),
        per_round(
            Direction::ColdRead,
            Layout::RawDirect,
            raw_goal(Layout::RawDirect),
        ),
        per_round(Direction::Write, Layout::OneFilePerBlock, None),
    ];
    (layouts, ratios, ceiling)
}

/// What the rounds measured.
struct Measured {
    rounds: Vec<Round>,
    orders: Vec<Vec<Layout>>,
    direct_mode: DirectMode,
}

fn measure_rounds(bench: &Bench, ds: &mut Dataset) -> Result<Measured> {
    let pool = bench.pools.get(bench.args.threads)?;
    let bytes = ds.total_bytes();
    let mut measured = Measured {
        rounds: Vec::with_capacity(bench.repeat()),
        orders: Vec::with_capacity(bench.repeat()),
        direct_mode: DirectMode::Direct,
    };
    let bar = bench
        .progress
        .bar("file", (LAYOUTS.len() * (bench.repeat() + 1)) as u64);
    for round in 0..=bench.repeat() {
        let order = round_order(round);
        let mut figures = Round::default();
        for layout in order {
            bar.set_message(layout.name());
            let (write, read) = match layout {
                // The file tier alone in a fresh store, as the per-tier table measures it.
                Layout::FileTier => tiers::fresh_store_round(
                    bench,
                    &pool,
                    ds,
                    "file",
                    "cold-file",
                    setup::sync_everything,
                )?,
                // One file per block, as the peers table measures it.
                Layout::OneFilePerBlock => {
                    let dir = bench.run_dir.fresh("cold-files")?;
                    let times = files::write_then_read(&pool, ds, &dir, setup::sync_everything)?;
                    bench.run_dir.release(&dir);
                    times
                }
                Layout::RawBuffered => {
                    let dir = bench.run_dir.fresh("cold-raw-buffered")?;
                    setup::sync_everything();
                    let times = limits::buffered_file(ds, &dir)?;
                    bench.run_dir.release(&dir);
                    times
                }
                Layout::RawDirect => {
                    let dir = bench.run_dir.fresh("cold-raw-direct")?;
                    setup::sync_everything();
                    let (write, read, mode) = limits::direct_file(&pool, ds, &dir)?;
                    bench.run_dir.release(&dir);
                    if mode == DirectMode::Buffered {
                        measured.direct_mode = mode;
                    }
                    (write, read)
                }
            };
            figures.write[layout.index()] = gbps(bytes, write);
            figures.read[layout.index()] = gbps(bytes, read);
            bar.inc(1);
        }
        if round > 0 {
            measured.rounds.push(figures);
            measured.orders.push(order.to_vec());
        }
    }
    bar.finish_and_clear();
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(tier: (f64, f64), files: (f64, f64), buffered: f64, direct: f64) -> Round {
        Round {
            write: [tier.0, files.0, 1.0, 1.0],
            read: [tier.1, files.1, buffered, direct],
        }
    }

    fn descriptions() -> [String; 4] {
        ["a".into(), "b".into(), "c".into(), "d".into()]
    }

    fn find(ratios: &[RoundRatio], baseline: Layout, direction: Direction) -> &RoundRatio {
        ratios
            .iter()
            .find(|r| r.baseline == baseline && r.direction == direction)
            .expect("ratio present")
    }

    #[test]
    fn goals_are_judged_on_the_median_of_per_round_ratios() {
        // Cold reads: tier 4, 3, 1 against files 1, 3, 2 give per-round ratios 4, 1, 0.5
        // (median 1.0), while the ratio of the medians would be 3 / 2 = 1.5 and pass.
        let rounds = [
            round((1.0, 4.0), (0.25, 1.0), 2.0, 1.0),
            round((1.0, 3.0), (0.5, 3.0), 3.0, 1.0),
            round((1.0, 1.0), (0.125, 2.0), 1.0, 1.0),
        ];
        let (layouts, ratios, ceiling) = summarize(&rounds, &descriptions());
        assert_eq!(layouts.len(), 4);
        assert_eq!(layouts[0].layout, Layout::FileTier);
        assert_eq!(layouts[0].cold_read_gbps.median, 3.0);
        assert_eq!(layouts[1].cold_read_gbps.median, 2.0);
        assert_eq!(layouts[1].write_gbps.values, vec![0.25, 0.5, 0.125]);

        let files = find(&ratios, Layout::OneFilePerBlock, Direction::ColdRead);
        assert_eq!(files.ratio.values, vec![4.0, 1.0, 0.5]);
        assert_eq!(files.ratio.median, 1.0);
        assert_eq!(files.goal, Some(FILES_GOAL));
        assert_eq!(files.met, Some(false));

        // Buffered reads 2, 3, 1 (median 2) beat O_DIRECT's 1: the goal goes with them.
        assert_eq!(ceiling, Layout::RawBuffered);
        let buffered = find(&ratios, Layout::RawBuffered, Direction::ColdRead);
        assert_eq!(buffered.ratio.values, vec![2.0, 1.0, 1.0]);
        assert_eq!(buffered.goal, Some(RAW_GOAL));
        assert_eq!(buffered.met, Some(true));
        let direct = find(&ratios, Layout::RawDirect, Direction::ColdRead);
        assert_eq!(direct.ratio.median, 3.0);
        assert_eq!((direct.goal, direct.met), (None, None));

        let write = find(&ratios, Layout::OneFilePerBlock, Direction::Write);
        assert_eq!(write.ratio.values, vec![4.0, 2.0, 8.0]);
        assert_eq!(write.ratio.median, 4.0);
        assert_eq!(write.goal, None);
    }

    #[test]
    fn the_raw_goal_follows_the_faster_raw_read() {
        let rounds = [
            round((1.0, 1.5), (0.1, 1.0), 1.0, 2.0),
            round((1.0, 1.5), (0.1, 1.0), 1.0, 1.8),
        ];
        let (_, ratios, ceiling) = summarize(&rounds, &descriptions());
        assert_eq!(ceiling, Layout::RawDirect);
        let direct = find(&ratios, Layout::RawDirect, Direction::ColdRead);
        assert_eq!(direct.goal, Some(RAW_GOAL));
        // 1.5 / 2.0 = 0.75 and 1.5 / 1.8 = 0.83: median 0.79, below 80%.
        assert!((direct.ratio.median - (0.75 + 1.5 / 1.8) / 2.0).abs() < 1e-12);
        assert_eq!(direct.met, Some(false));
        let buffered = find(&ratios, Layout::RawBuffered, Direction::ColdRead);
        assert_eq!((buffered.goal, buffered.met), (None, None));
        let files = find(&ratios, Layout::OneFilePerBlock, Direction::ColdRead);
        assert_eq!(files.met, Some(true));
    }

    #[test]
    fn rounds_without_a_baseline_figure_are_left_out_of_the_ratio() {
        let rounds = [
            round((1.0, 3.0), (0.1, 0.0), 1.0, 1.0),
            round((1.0, 3.0), (0.1, 2.0), 1.0, 1.0),
        ];
        let (_, ratios, _) = summarize(&rounds, &descriptions());
        let files = find(&ratios, Layout::OneFilePerBlock, Direction::ColdRead);
        assert_eq!(files.ratio.values, vec![1.5]);
        let (_, none, _) = summarize(&[], &descriptions());
        assert!(none.iter().all(|r| r.met != Some(true)), "{none:?}");
    }

    #[test]
    fn every_layout_leads_once_in_four_rounds() {
        let firsts: Vec<Layout> = (0..4).map(|r| round_order(r)[0]).collect();
        assert_eq!(firsts, LAYOUTS.to_vec());
        for r in 0..8 {
            let mut order = round_order(r).to_vec();
            order.sort_by_key(|l| l.index());
            assert_eq!(
                order,
                LAYOUTS.to_vec(),
                "round {r} measures every layout once"
            );
        }
        assert_eq!(round_order(5), round_order(1));
    }

    #[test]
    fn skip_reasons_name_the_cause() {
        let reason = skip_reason(&["memory"]).expect("memory alone excludes the file tier");
        assert!(reason.contains("--tier"), "{reason}");
        assert!(reason.contains("memory"), "{reason}");
        assert!(skip_reason(&["shm"]).is_some());
        let with_file = skip_reason(&["memory", "shm", "file", "gpu"]);
        assert_eq!(with_file, setup::not_compiled_reason("file"));
        if cfg!(feature = "lustre") {
            assert_eq!(skip_reason(&["file"]), None);
        }
    }

    #[test]
    fn json_has_the_judged_fields() {
        let rounds = [round((1.0, 3.0), (0.1, 1.0), 2.0, 1.0)];
        let (layouts, ratios, ceiling) = summarize(&rounds, &descriptions());
        let mut table = FileTable::empty(2, 64);
        table.layouts = layouts;
        table.ratios = ratios;
        table.raw_ceiling = Some(ceiling);
        table.round_orders = vec![round_order(1).to_vec()];
        let json = serde_json::to_value(&table).expect("serializes");
        assert_eq!(json["threads"], 2);
        assert_eq!(json["batch"], 64);
        assert_eq!(json["raw_ceiling"], "raw_buffered");
        assert_eq!(json["layouts"][0]["layout"], "file_tier");
        assert_eq!(json["layouts"][1]["layout"], "one_file_per_block");
        assert_eq!(json["layouts"][3]["cold_read_gbps"]["median"], 1.0);
        assert_eq!(json["layouts"][0]["write_gbps"]["values"][0], 1.0);
        assert_eq!(json["ratios"][0]["baseline"], "one_file_per_block");
        assert_eq!(json["ratios"][0]["direction"], "cold_read");
        assert_eq!(json["ratios"][0]["ratio"]["median"], 3.0);
        assert_eq!(json["ratios"][0]["goal"], FILES_GOAL);
        assert_eq!(json["ratios"][0]["met"], true);
        assert_eq!(json["ratios"][1]["goal"], RAW_GOAL);
        assert!(json["ratios"][2].get("goal").is_none());
        assert_eq!(json["round_orders"][0][0], "one_file_per_block");
        assert!(json.get("skipped").is_none());
        let same = table.same_round().expect("both layouts measured");
        assert_eq!(same.ratio, (10.0, 3.0));
        assert_eq!(same.cascade, (1.0, 3.0));
    }
}
