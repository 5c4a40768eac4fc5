//! What every section shares: the arguments, the deployment, the data folder, thread
//! pools, progress bars, and figures measured once and reused (the one-file-per-block
//! baseline appears in the overflow table and the peers table).

use std::path::PathBuf;

use cascade::Result;

use crate::args::Args;
use crate::measure::Pools;
use crate::progress::Progress;
use crate::setup::{Deployment, RunDir};
use crate::stats::Samples;

/// Write and read GB/s of one store or layout, one figure per timed repetition (the
/// read is cold for file-backed layouts).
#[derive(Debug, Clone)]
pub struct RwFigures {
    /// Write GB/s per repetition.
    pub write: Samples,
    /// Read GB/s per repetition.
    pub read: Samples,
}

/// The shared state of one run.
pub struct Bench {
    /// The command line.
    pub args: Args,
    /// The deployment under test.
    pub deployment: Deployment,
    /// Where files go.
    pub run_dir: RunDir,
    /// Thread pools by size.
    pub pools: Pools,
    /// Progress bars (hidden unless stdout is a terminal).
    pub progress: Progress,
    /// The one-file-per-block layout, once measured (or why it could not be).
    pub files_baseline: Option<std::result::Result<RwFigures, String>>,
}

impl Bench {
    /// Loads the deployment and creates the data folder.
    pub fn new(args: Args, progress: Progress) -> Result<Self> {
        let deployment = Deployment::load(args.config.as_deref())?;
        let parent = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_parent(&deployment),
        };
        let run_dir = RunDir::create(&parent, args.keep_data)?;
        for (tier, reason) in deployment.check(&run_dir)? {
            tracing::warn!(%tier, %reason, "tier unavailable on this machine; its rows say skipped");
        }
        Ok(Self {
            args,
            deployment,
            run_dir,
            pools: Pools::default(),
            progress,
            files_baseline: None,
        })
    }

    /// Timed repetitions per figure.
    pub fn repeat(&self) -> usize {
        self.args.repeat as usize
    }

    /// Blocks per batch call.
    pub fn batch(&self) -> usize {
        self.args.batch as usize
    }
}

/// Inside the deployment's file tier folder (same file system; the tier ignores names
/// that are not its own), else `./cascade-data`.
fn default_data_parent(deployment: &Deployment) -> PathBuf {
    deployment
        .file_tier_dir()
        .unwrap_or_else(|| PathBuf::from("./cascade-data"))
}
