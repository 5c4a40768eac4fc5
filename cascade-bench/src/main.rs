//! `cascade-bench`: measures a Cascade deployment (see `cascade-bench --help`).

use std::process::ExitCode;

use cascade_bench::{Args, progress::Progress};
use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let command = std::iter::once("cascade-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    if args.cluster {
        return cluster_main(args, command);
    }
    let json = args.json.clone();
    let progress = Progress::new(!args.no_progress);
    let report = match cascade_bench::run(args, command, progress) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cascade-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.to_text());
    if let Some(path) = json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&path, bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("cascade-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(feature = "cluster")]
fn cluster_main(args: Args, command: String) -> ExitCode {
    match cascade_bench::cluster::main(&args, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cascade-bench --cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "cluster"))]
fn cluster_main(_args: Args, _command: String) -> ExitCode {
    eprintln!(
        "cascade-bench --cluster: this build has no cluster support; build it with \
         `cargo build --release -p cascade-bench --features cluster` (needs MPI, docs/cluster.md)"
    );
    ExitCode::FAILURE
}
