//! The `cascade` command: what a deployment holds, whether its stored blocks are intact,
//! and its metrics, for the operator of a cluster (see docs/operations.md).
//!
//! Every subcommand opens the deployment named by `--config` (default: the embedded
//! `cascade.toml`) as a store would, fails with the deployment's error when it does not
//! open, prints a table, or JSON with `--json`.

pub mod args;
pub mod compact;
pub mod deployment;
pub mod evict;
pub mod info;
pub mod ls;
pub mod output;
pub mod serve;
pub mod verify;

pub use args::{Args, Command};
pub use deployment::Deployment;

/// Runs `args`; returns the exit code (0 fine, 1 a failure or damage left in place).
pub fn run(args: &Args) -> cascade::Result<i32> {
    let deployment = Deployment::open(args.config.as_deref())?;
    for (tier, reason) in &deployment.skipped {
        tracing::warn!(%tier, %reason, "tier unavailable on this machine; continuing without it (required = false)");
    }
    let json = args.json;
    match &args.command {
        Command::Info => output::print(&info::run(&deployment), json),
        Command::Ls { tier, limit } => {
            output::print(&ls::run(&deployment, tier.as_deref(), *limit)?, json)
        }
        Command::Verify { repair } => {
            let report = verify::run(&deployment, *repair, output::Progress::new(!json))?;
            let left = report.damaged_left();
            output::print(&report, json)?;
            return Ok(i32::from(left > 0));
        }
        Command::Evict { tier, bytes } => {
            output::print(&evict::run(&deployment, tier, bytes.as_u64())?, json)
        }
        Command::Compact => output::print(&compact::run(&deployment)?, json),
        Command::Metrics { listen } => serve::run(&deployment, listen, json),
    }?;
    Ok(0)
}
