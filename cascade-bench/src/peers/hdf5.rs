//! The HDF5 peer through h5py (a maintained binding): one dataset per block, and one
//! chunked dataset with a chunk per block. The bench writes its helper script into the
//! run folder and runs it with `--python`.

use std::process::Command;

use cascade::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::bench::{Bench, RwFigures};
use crate::stats::Samples;

/// The helper script, shipped inside the binary so that it runs from anywhere.
pub const SCRIPT: &str = include_str!("../../scripts/hdf5_peer.py");

/// Exit status the script uses for "h5py is not installed".
const MISSING: i32 = 3;

#[derive(Debug, Deserialize)]
struct Output {
    h5py: String,
    hdf5: String,
    layouts: Layouts,
}

#[derive(Debug, Deserialize)]
struct Layouts {
    datasets: Figures,
    chunked: Figures,
}

#[derive(Debug, Deserialize)]
struct Figures {
    write_gbps: Vec<f64>,
    read_gbps: Vec<f64>,
}

impl From<Figures> for RwFigures {
    fn from(f: Figures) -> Self {
        Self {
            write: Samples::new(f.write_gbps),
            read: Samples::new(f.read_gbps),
        }
    }
}

/// The two layouts' figures and a version note; `Unavailable` when Python or h5py is
/// missing.
pub fn measure(
    bench: &Bench,
    blocks: usize,
    block_size: usize,
) -> Result<(RwFigures, RwFigures, String)> {
    let dir = bench.run_dir.fresh("hdf5")?;
    let script = dir.join("hdf5_peer.py");
    std::fs::write(&script, SCRIPT)
        .map_err(|e| Error::io("cannot write the HDF5 helper script", e))?;
    let output = Command::new(&bench.args.python)
        .arg(&script)
        .args(["--dir", &dir.display().to_string()])
        .args([
            "--blocks",
            &blocks.to_string(),
            "--size",
            &block_size.to_string(),
        ])
        .args(["--repeat", &bench.repeat().to_string()])
        .output()
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} not runnable ({e}); scripts/install-peers.sh installs python3 and h5py",
                    bench.args.python.display()
                ),
            )
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.code() == Some(MISSING) {
        return Err(Error::new(ErrorKind::Unavailable, stderr));
    }
    if !output.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("the HDF5 helper failed ({}): {stderr}", output.status),
        ));
    }
    let parsed: Output = serde_json::from_slice(&output.stdout).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("the HDF5 helper printed no figures: {e}"),
        )
    })?;
    Ok((
        parsed.layouts.datasets.into(),
        parsed.layouts.chunked.into(),
        format!(
            "h5py {} (HDF5 {}), one Python thread",
            parsed.h5py, parsed.hdf5
        ),
    ))
}
