//! Tables or JSON on stdout, progress bars on stderr.

use std::io::IsTerminal;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// What a subcommand prints: serializable for `--json`, a table otherwise.
pub trait Report: Serialize {
    /// The text form.
    fn text(&self) -> String;
}

/// Prints `report` as JSON or as its text.
pub fn print(report: &impl Report, json: bool) -> cascade::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(|e| {
            cascade::Error::new(cascade::ErrorKind::Io, format!("cannot render JSON: {e}"))
        })?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// A table with `header`, in the command's style.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.iter().copied());
    table
}

/// `bytes` as "1.5 GiB".
pub fn size(bytes: u64) -> String {
    cascade::ByteSize(bytes).to_string()
}

/// Progress bars on stderr, only when it is a terminal and drawing is allowed.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Draws when `allowed` and stderr is a terminal.
    pub fn new(allowed: bool) -> Self {
        Self {
            enabled: allowed && std::io::stderr().is_terminal(),
        }
    }

    /// A bar over `total` bytes labelled `what`.
    pub fn bytes(&self, what: &str, total: u64) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        bar
    }
}
