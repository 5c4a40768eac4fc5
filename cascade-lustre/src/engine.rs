//! Which I/O engine a tier uses: the `io_engine` setting, and the probe that decides
//! `"auto"` at open.

use std::fmt;

use cascade_core::{Error, ErrorKind, Result};
use serde::Deserialize;

/// The `io_engine` setting of a file tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoEngine {
    /// io_uring where this process may use it, else `pread`/`pwrite` (one log line says
    /// why).
    #[default]
    Auto,
    /// io_uring, or an [`ErrorKind::Unavailable`] error at open where the kernel or a
    /// seccomp profile (Docker's and containerd's default ones) forbids it.
    IoUring,
    /// Positioned system calls (`preadv`/`pwritev`) from a pool of I/O threads.
    Psync,
}

/// The engine a tier actually runs with, decided at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineInUse {
    /// One io_uring per calling thread; a batch is one submission.
    IoUring,
    /// `preadv`/`pwritev` from the I/O threads.
    Psync,
}

impl EngineInUse {
    /// `"io_uring"` or `"psync"`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineInUse::IoUring => "io_uring",
            EngineInUse::Psync => "psync",
        }
    }
}

impl fmt::Display for EngineInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether this process may use io_uring (what `io_engine = "auto"` checks at open);
/// `Err` says why not.
pub fn io_uring_available() -> std::result::Result<(), String> {
    crate::uring::probe()
}

/// Resolves the setting: probes io_uring for `Auto` and `IoUring`.
pub fn choose(requested: IoEngine, tier: &str) -> Result<EngineInUse> {
    match requested {
        IoEngine::Psync => Ok(EngineInUse::Psync),
        IoEngine::Auto => match crate::uring::probe() {
            Ok(()) => Ok(EngineInUse::IoUring),
            Err(why) => {
                tracing::info!(tier, reason = %why, "io_uring is not available; the file tier uses pread/pwrite (io_engine = \"auto\")");
                Ok(EngineInUse::Psync)
            }
        },
        IoEngine::IoUring => crate::uring::probe().map(|()| EngineInUse::IoUring).map_err(|why| {
            Error::new(
                ErrorKind::Unavailable,
                "io_engine = \"io_uring\" but this process may not use io_uring (a seccomp profile such as Docker's default, a kernel without it, or kernel.io_uring_disabled); set io_engine = \"auto\" or \"psync\"",
            )
            .with_context("tier", tier)
            .with_context("reason", why)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        io_engine: IoEngine,
    }

    #[test]
    fn setting_names_parse_and_others_are_refused() {
        for (text, want) in [
            ("auto", IoEngine::Auto),
            ("io_uring", IoEngine::IoUring),
            ("psync", IoEngine::Psync),
        ] {
            let holder: Holder = toml::from_str(&format!("io_engine = \"{text}\"")).unwrap();
            assert_eq!(holder.io_engine, want);
        }
        assert!(toml::from_str::<Holder>("io_engine = \"aio\"").is_err());
    }

    #[test]
    fn psync_needs_no_probe() {
        assert_eq!(
            choose(IoEngine::Psync, "t").unwrap(),
            EngineInUse::Psync,
            "psync is always available"
        );
    }
}
