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
    let mut rows = vec![
        PeerRow::new(REDIS, "SET / GET, loopback, pipelined", "memory", redis),
        PeerRow::new(
            FILES,
            "one file per block, same folder as the file tier",
            "cold",
            files,
        ),
    ];
    match hdf5 {
        Ok((datasets, chunked, note)) => {
            rows.push(PeerRow::new(
                HDF5,
                "one dataset per block",
                "cold",
                Ok((datasets, Some(note.clone()))),
            ));
            rows.push(PeerRow::new(
                HDF5,
                "one chunked dataset, a chunk per block",
                "cold",
                Ok((chunked, Some(note))),
            ));
        }
        Err(e) => {
            rows.push(PeerRow::new(
                HDF5,
                "one dataset per block",
                "cold",
                Err(e.to_string()),
            ));
            rows.push(PeerRow::new(
                HDF5,
                "one chunked dataset, a chunk per block",
                "cold",
                Err(e.to_string()),
            ));
        }
    }
    PeersTable { rows }
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
}

/// The ratios Cascade / peer for every pair with figures on both sides.
pub fn ratios(cascade: CascadeFigures<'_>, peers: &PeersTable) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut push = |what: String, c: f64, p: Option<f64>, goal: Option<f64>| {
        if let Some((p, r)) = p.and_then(|p| ratio(c, p).map(|r| (p, r))) {
            out.push(Ratio {
                what,
                cascade_gbps: c,
                peer_gbps: p,
                ratio: r,
                goal,
                met: goal.map(|g| r >= g),
            });
        }
    };
    let find = |peer: &str, layout_start: &str| {
        peers
            .rows
            .iter()
            .find(|r| r.peer == peer && r.layout.starts_with(layout_start))
    };
    if let (Some((kind, write, read)), Some(redis)) = (cascade.host, find(REDIS, "")) {
        let goal = (kind == "shm").then_some(5.0);
        push(format!("{kind} read / Redis GET"), read, redis.read(), goal);
        push(
            format!("{kind} write / Redis SET"),
            write,
            redis.write(),
            None,
        );
    }
    if let Some((write, read)) = cascade.file {
        if let Some(files) = find(FILES, "") {
            push(
                "file tier cold read / one file per block cold read".into(),
                read,
                files.read(),
                Some(1.5),
            );
            push(
                "file tier write / one file per block write".into(),
                write,
                files.write(),
                None,
            );
        }
        for layout in ["one dataset", "one chunked"] {
            if let Some(h5) = find(HDF5, layout) {
                push(
                    format!("file tier cold read / HDF5 {} cold read", h5.layout),
                    read,
                    h5.read(),
                    None,
                );
                push(
                    format!("file tier write / HDF5 {} write", h5.layout),
                    write,
                    h5.write(),
                    None,
                );
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
}
