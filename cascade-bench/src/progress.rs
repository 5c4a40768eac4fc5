//! Progress bars for the long phases, drawn only when stdout is a terminal so that
//! redirected output and CI logs stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Hands out progress bars, or hidden ones when drawing is off.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Draws only when `allowed` and stdout is a terminal.
    pub fn new(allowed: bool) -> Self {
        Self {
            enabled: allowed && std::io::stdout().is_terminal(),
        }
    }

    /// Never draws.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    /// A bar of `total` steps labelled `what`; finish it with [`ProgressBar::finish_and_clear`].
    pub fn bar(&self, what: &str, total: u64) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        bar
    }
}
