//! The command line.

use std::path::PathBuf;

use cascade::ByteSize;
use clap::{Parser, Subcommand};

/// Look inside a Cascade deployment, check it, and watch it.
#[derive(Debug, Parser)]
#[command(name = "cascade", version, about)]
pub struct Args {
    /// The deployment (TOML, as given to the store). Default: the embedded cascade.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of tables (no progress bar).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The tiers (kind, capacity, used bytes, blocks, persistent or not) and the
    /// store's counters.
    Info,
    /// Block ids with their size, tier and age (age where the tier records write times:
    /// the file tier).
    Ls {
        /// Only the tier with this name (or position, from 0 = fastest).
        #[arg(long)]
        tier: Option<String>,
        /// At most this many blocks (the rest are counted).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Reads every block of the persistent tiers and checks its checksum; reports the
    /// damaged ones (exit 1 while any is left).
    Verify {
        /// Drop the damaged blocks from the store.
        #[arg(long)]
        repair: bool,
    },
    /// Moves the coldest blocks of a tier down the tiers (out of the store from the last
    /// one) until this many bytes more are free there.
    Evict {
        /// The tier's name (or position, from 0 = fastest).
        #[arg(long)]
        tier: String,
        /// Bytes to free: a number or a size like "2 GiB".
        #[arg(long, value_parser = parse_size)]
        bytes: ByteSize,
    },
    /// Rewrites the file tiers' segments whose dead fraction is over their threshold.
    Compact,
    /// Serves the deployment's metrics at http://ADDRESS/metrics until interrupted.
    Metrics {
        /// Address to listen on.
        #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:9464")]
        listen: String,
    },
}

fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.parse::<ByteSize>()
        .map_err(|e| format!("bytes {}", e.message()))
}
