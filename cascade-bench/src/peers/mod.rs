//! Peers measured in the same run with the same blocks: Redis (in memory, over loopback),
//! one file per block and HDF5 (on the file tier's file system). A peer that is not
//! installed is skipped with the reason; `scripts/install-peers.sh` installs them.

pub mod files;
pub mod hdf5;
pub mod redis;

use serde::Serialize;

use crate::bench::{Bench, RwFigures};
use crate::dataset::Dataset;
use crate::stats::{Samples, ratio};
use files::FILES_GOAL;

/// The peers table.
#[derive(Debug, Clone, Serialize)]
pub struct PeersTable {
    /// One row per peer layout.
    pub rows: Vec<PeerRow>,
}

/// One peer layout's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// The peer.
    pub peer: String,
    /// How it stores blocks.
    pub layout: String,
    /// Version and settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why there are no figures, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Whether reads are cold (from disk) or from memory.
    pub read: String,
    /// Write GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_gbps: Option<Samples>,
    /// Read GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_gbps: Option<Samples>,
}

impl PeerRow {
    fn new(
        peer: &str,
        layout: &str,
        read: &str,
        result: std::result::Result<(RwFigures, Option<String>), String>,
    ) -> Self {
        let mut row = Self {
            peer: peer.into(),
            layout: layout.into(),
            note: None,
            skipped: None,
            read: read.into(),
            write_gbps: None,
            read_gbps: None,
        };
        match result {
            Ok((figures, note)) => {
                row.note = note;
                row.write_gbps = Some(figures.write);
                row.read_gbps = Some(figures.read);
            }
            Err(reason) => row.skipped = Some(reason),
        }
        row
    }

    /// Median write GB/s, when measured.
    pub fn write(&self) -> Option<f64> {
        self.write_gbps.as_ref().map(|s| s.median)
    }

    /// Median read GB/s, when measured.
    pub fn read(&self) -> Option<f64> {
        self.read_gbps.as_ref().map(|s| s.median)
    }
}

/// Redis row label.
pub const REDIS: &str = "Redis";
/// One-file-per-block row label.
pub const FILES: &str = "one file per block";
/// HDF5 row label.
pub const HDF5: &str = "HDF5";

/// Measures every peer.
pub fn run(bench: &mut Bench, ds: &mut Dataset) -> PeersTable {
    let bar = bench.progress.bar("peers", 3);
    bar.set_message("redis");
    let redis = redis::measure(bench, ds)
        .map(|(figures, note)| (figures, Some(note)))
        .map_err(|e| e.to_string());
    bar.inc(1);
    bar.set_message("files");
    let files = files::baseline(bench, ds).map(|f| {
        (
            f,
            Some(format!(
                "{} threads, syncfs after the writes",
                bench.args.threads
            )),
        )
    });
    bar.inc(1);
    bar.set_message("hdf5");
    let hdf5 = hdf5::measure(bench, ds.blocks(), ds.block_size());
    bar.inc(1);
    bar.finish_and_clear();
    let (datasets, chunked) = match hdf5 {
        Ok((datasets, chunked, note)) => (
            Ok((datasets, Some(note.clone()))),
            Ok((chunked, Some(note))),
        ),
        Err(e) => (Err(e.to_string()), Err(e.to_string())),
    };
    PeersTable {
        rows: vec![
            PeerRow::new(REDIS, "SET / GET, loopback, pipelined", "memory", redis),
            PeerRow::new(
                FILES,
                "one file per block, same folder as the file tier",
                "cold",
                files,
            ),
            PeerRow::new(HDF5, "one dataset per block", "cold", datasets),
            PeerRow::new(
                HDF5,
                "one chunked dataset, a chunk per block",
                "cold",
                chunked,
            ),
        ],
    }
}

/// Cascade over a peer, with the goal where the issue sets one.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What is compared, in words.
    pub what: String,
    /// Cascade's GB/s.
    pub cascade_gbps: f64,
    /// The peer's GB/s.
    pub peer_gbps: f64,
    /// Cascade over peer.
    pub ratio: f64,
    /// The goal for this machine, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<f64>,
    /// Whether the goal is met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// Cascade's figures the ratios use.
#[derive(Debug, Clone, Copy, Default)]
pub struct CascadeFigures<'a> {
    /// The memory-backed tier compared with Redis (`shm`, or `memory` without shm) and its
    /// (write, read) GB/s.
    pub host: Option<(&'a str, f64, f64)>,
    /// The file tier's (write, cold read) GB/s.
    pub file: Option<(f64, f64)>,
    /// The file tier against one file per block measured in the same rounds (the `file`
    /// section); when present it replaces the comparison with the once-per-run baseline.
    pub file_same_round: Option<SameRound>,
}

/// The file tier and one file per block measured in the same rounds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SameRound {
    /// The file tier's (write, cold read) median GB/s.
    pub cascade: (f64, f64),
    /// One file per block's (write, cold read) median GB/s.
    pub files: (f64, f64),
    /// (write, cold read): medians of the per-round ratios file tier / one file per block.
    pub ratio: (f64, f64),
}

/// What the same-round comparison adds to a ratio's name.
pub const SAME_ROUNDS: &str =
    " (same rounds: File tier cold read table, median of per-round ratios)";

fn ratio_row(what: String, cascade: f64, peer: f64, ratio: f64, goal: Option<f64>) -> Ratio {
    Ratio {
        what,
        cascade_gbps: cascade,
        peer_gbps: peer,
        ratio,
        goal,
        met: goal.map(|g| ratio >= g),
    }
}

/// The ratios Cascade / peer for every pair with figures on both sides.
pub fn ratios(cascade: CascadeFigures<'_>, peers: &PeersTable) -> Vec<Ratio> {
    let compare = |what: String, c: f64, p: Option<f64>, goal: Option<f64>| {
        p.and_then(|p| ratio(c, p).map(|r| ratio_row(what, c, p, r, goal)))
    };
    let find = |peer: &str, layout_start: &str| {
        peers
            .rows
            .iter()
            .find(|r| r.peer == peer && r.layout.starts_with(layout_start))
    };
    let mut out = Vec::new();
    if let (Some((kind, write, read)), Some(redis)) = (cascade.host, find(REDIS, "")) {
        let goal = (kind == "shm").then_some(5.0);
        out.extend(compare(
            format!("{kind} read / Redis GET"),
            read,
            redis.read(),
            goal,
        ));
        out.extend(compare(
            format!("{kind} write / Redis SET"),
            write,
            redis.write(),
            None,
        ));
    }
    match (cascade.file_same_round, cascade.file, find(FILES, "")) {
        // Same-round figures: the ratio judged is the median of the per-round ratios,
        // not the ratio of the two medians shown beside it.
        (Some(same), _, _) => {
            out.push(ratio_row(
                format!("file tier cold read / one file per block cold read{SAME_ROUNDS}"),
                same.cascade.1,
                same.files.1,
                same.ratio.1,
                Some(FILES_GOAL),
            ));
            out.push(ratio_row(
                format!("file tier write / one file per block write{SAME_ROUNDS}"),
                same.cascade.0,
                same.files.0,
                same.ratio.0,
                None,
            ));
        }
        (None, Some((write, read)), Some(files)) => {
            out.extend(compare(
                "file tier cold read / one file per block cold read".into(),
                read,
                files.read(),
                Some(FILES_GOAL),
            ));
            out.extend(compare(
                "file tier write / one file per block write".into(),
                write,
                files.write(),
                None,
            ));
        }
        _ => {}
    }
    if let Some((write, read)) = cascade.file {
        for layout in ["one dataset", "one chunked"] {
            if let Some(h5) = find(HDF5, layout) {
                out.extend(compare(
                    format!("file tier cold read / HDF5 {} cold read", h5.layout),
                    read,
                    h5.read(),
                    None,
                ));
                out.extend(compare(
                    format!("file tier write / HDF5 {} write", h5.layout),
                    write,
                    h5.write(),
                    None,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(write: f64, read: f64) -> RwFigures {
        RwFigures {
            write: Samples::new(vec![write]),
            read: Samples::new(vec![read]),
        }
    }

    #[test]
    fn ratios_skip_absent_peers_and_judge_goals() {
        let peers = PeersTable {
            rows: vec![
                PeerRow::new(REDIS, "SET / GET", "memory", Ok((figures(2.0, 2.5), None))),
                PeerRow::new(
                    FILES,
                    "one file per block",
                    "cold",
                    Ok((figures(1.0, 1.0), None)),
                ),
                PeerRow::new(
                    HDF5,
                    "one dataset per block",
                    "cold",
                    Err("h5py not installed".into()),
                ),
            ],
        };
        let cascade = CascadeFigures {
            host: Some(("shm", 10.0, 15.0)),
            file: Some((1.2, 1.4)),
            file_same_round: None,
        };
        let ratios = ratios(cascade, &peers);
        assert_eq!(ratios.len(), 4, "{ratios:?}");
        assert_eq!(ratios[0].ratio, 6.0);
        assert_eq!(ratios[0].met, Some(true));
        let file_read = &ratios[2];
        assert!((file_read.ratio - 1.4).abs() < 1e-12);
        assert_eq!(file_read.met, Some(false));
        assert!(ratios.iter().all(|r| !r.what.contains("HDF5")));
    }

    #[test]
    fn same_round_figures_replace_the_once_per_run_baseline() {
        let peers = PeersTable {
            rows: vec![PeerRow::new(
                FILES,
                "one file per block",
                "cold",
                Ok((figures(1.0, 1.0), None)),
            )],
        };
        let cascade = CascadeFigures {
            host: None,
            file: Some((1.2, 1.4)),
            // Medians 2.0 / 1.0, but the per-round ratios' median is 1.6: that is judged.
            file_same_round: Some(SameRound {
                cascade: (0.9, 2.0),
                files: (0.3, 1.0),
                ratio: (3.5, 1.6),
            }),
        };
        let ratios = ratios(cascade, &peers);
        assert_eq!(ratios.len(), 2, "{ratios:?}");
        let read = &ratios[0];
        assert!(read.what.ends_with(SAME_ROUNDS), "{}", read.what);
        assert_eq!((read.cascade_gbps, read.peer_gbps), (2.0, 1.0));
        assert_eq!(read.ratio, 1.6);
        assert_eq!(read.met, Some(true));
        assert_eq!(ratios[1].ratio, 3.5);
        assert_eq!(ratios[1].goal, None);
    }
}
