//! Settings of a `file` tier, read from its `[[tiers]]` entry.

use std::path::PathBuf;

use cascade_core::config::ByteSize;
use cascade_core::{Access, Error, FileMode, Result};
use serde::Deserialize;

use crate::engine::IoEngine;
use crate::format::{MAX_WRITER_LEN, PAGE};

/// Settings of a `file` (alias `lustre`) tier.
///
/// ```toml
/// [[tiers]]
/// kind = "file"
/// path = "/lustre/scratch/kv"
/// capacity = "2 TiB"
/// stripe_count = 16
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTierConfig {
    /// Directory holding the segment files; created when missing. Required, no default.
    pub path: PathBuf,
    /// Bytes of live blocks the tier may hold, counting each record's 64-byte header and
    /// its padding to 4 KiB. Space of removed blocks is reclaimed by compaction, so the
    /// directory may briefly hold more. Default: 16 GiB.
    #[serde(default = "default_capacity")]
    pub capacity: ByteSize,
    /// Size at which a segment file is sealed and a new one started; rounded up to
    /// 4 KiB, at least 1 MiB. Default: 256 MiB.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// Open segment files with O_DIRECT, bypassing the page cache (every I/O is 4 KiB
    /// aligned). Falls back to buffered I/O with a warning where the filesystem refuses
    /// O_DIRECT. Default: false.
    #[serde(default)]
    pub direct_io: bool,
    /// Lustre stripe count of new segment files (`lfs setstripe -c`); -1 stripes over
    /// every OST. Ignored, with one log line, on other filesystems. Default: 8.
    #[serde(default = "default_stripe_count")]
    pub stripe_count: i64,
    /// Lustre stripe size of new segment files (`lfs setstripe -S`), a multiple of
    /// 64 KiB. Ignored on other filesystems. Default: 4 MiB.
    #[serde(default = "default_stripe_size")]
    pub stripe_size: ByteSize,
    /// Name of this writer in segment file names, so that several processes or nodes can
    /// share one directory: letters, digits, `-` and `_` (other characters become `_`).
    /// A second live tier with the same configured id on one directory is refused
    /// (`Busy`); a defaulted id gets a suffix (`-1`, ...) instead, so one process may
    /// open a directory twice. Default: `"<host>-<pid>"`.
    #[serde(default)]
    pub writer_id: Option<String>,
    /// Fraction of a sealed segment's bytes that must be dead (removed or replaced
    /// blocks) before compaction rewrites it, in (0, 1]. Default: 0.5.
    #[serde(default = "default_compaction_threshold")]
    pub compaction_threshold: f64,
    /// Threads that read the runs of one `get_batch` at the same time. Reads wait on the
    /// device, not the CPU, so more threads than cores keep more requests in flight
    /// (Lustre serves many concurrent RPCs per client). Default: 8.
    #[serde(default = "default_io_threads")]
    pub io_threads: usize,
    /// Segments appended to at once. Each writing thread appends to the segment of its
    /// own lane, so the blocks one thread writes stay contiguous on disk and read back
    /// as one sequential stream (threads beyond this number share lanes). Default: 8.
    #[serde(default = "default_write_lanes")]
    pub write_lanes: usize,
    /// I/O engine of `get_batch`, `get` and every write: `"auto"` uses io_uring where
    /// this process may (one ring per calling thread, a whole batch in one submission)
    /// and otherwise `pread`/`pwrite`, saying why in one log line; `"io_uring"` insists
    /// (open fails with `Unavailable` where a seccomp profile, such as Docker's default,
    /// or the kernel forbids it); `"psync"` always uses `preadv`/`pwritev` from the
    /// I/O threads. Default: `"auto"`.
    #[serde(default)]
    pub io_engine: IoEngine,
    /// Run compaction on a background thread as segments cross the threshold. When
    /// false, only [`crate::FileTier::compact`] compacts. Default: true.
    #[serde(default = "default_true")]
    pub background_compaction: bool,
    /// Permissions of what the tier creates, for a group sharing one directory on
    /// purpose: octal like `"0770"` (directories get the search bit of every class that
    /// may read, files never an execute bit, the owner always read and write). Applied
    /// exactly, whatever the umask; an existing directory that grants more is left as it
    /// is and named in a warning. Default: owner only (directories 0700, files 0600).
    #[serde(default)]
    pub mode: Option<FileMode>,
    /// Group (name or gid) given to every directory and file the tier creates, with
    /// `mode` letting it in; the user must belong to it. Default: the user's own group.
    #[serde(default)]
    pub group: Option<String>,
}

fn default_capacity() -> ByteSize {
    ByteSize::gib(16)
}

fn default_segment_size() -> ByteSize {
    ByteSize::mib(256)
}

fn default_stripe_count() -> i64 {
    8
}

fn default_stripe_size() -> ByteSize {
    ByteSize::mib(4)
}

fn default_compaction_threshold() -> f64 {
    0.5
}

fn default_io_threads() -> usize {
    8
}

fn default_write_lanes() -> usize {
    8
}

fn default_true() -> bool {
    true
}

impl FileTierConfig {
    /// The defaults, in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            capacity: default_capacity(),
            segment_size: default_segment_size(),
            direct_io: false,
            stripe_count: default_stripe_count(),
            stripe_size: default_stripe_size(),
            writer_id: None,
            compaction_threshold: default_compaction_threshold(),
            io_threads: default_io_threads(),
            write_lanes: default_write_lanes(),
            io_engine: IoEngine::Auto,
            background_compaction: true,
            mode: None,
            group: None,
        }
    }

    /// The permissions from `mode` and `group`.
    pub fn access(&self) -> Result<Access> {
        Access::new(self.mode, self.group.as_deref())
    }

    /// Checks every value; errors are [`cascade_core::ErrorKind::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config("path: must name a directory"));
        }
        if self.capacity.as_u64() < PAGE * 2 {
            return Err(Error::config("capacity: must be at least 8 KiB")
                .with_context("capacity", self.capacity));
        }
        if self.segment_size.as_u64() < 1 << 20 {
            return Err(Error::config("segment_size: must be at least 1 MiB")
                .with_context("segment_size", self.segment_size));
        }
        if self.stripe_count == 0 || self.stripe_count < -1 {
            return Err(
                Error::config("stripe_count: must be positive, or -1 for all OSTs")
                    .with_context("stripe_count", self.stripe_count),
            );
        }
        if self.stripe_size.as_u64() == 0 || self.stripe_size.as_u64() % (64 << 10) != 0 {
            return Err(
                Error::config("stripe_size: must be a positive multiple of 64 KiB")
                    .with_context("stripe_size", self.stripe_size),
            );
        }
        if !(self.compaction_threshold > 0.0 && self.compaction_threshold <= 1.0) {
            return Err(Error::config("compaction_threshold: must be in (0, 1]")
                .with_context("compaction_threshold", self.compaction_threshold));
        }
        if self.io_threads == 0 || self.io_threads > 256 {
            return Err(Error::config("io_threads: must be 1 to 256")
                .with_context("io_threads", self.io_threads));
        }
        if self.write_lanes == 0 || self.write_lanes > 64 {
            return Err(Error::config("write_lanes: must be 1 to 64")
                .with_context("write_lanes", self.write_lanes));
        }
        if let Some(writer) = &self.writer_id {
            if writer.is_empty() || writer.len() > MAX_WRITER_LEN / 2 {
                return Err(Error::config("writer_id: must have 1 to 100 characters")
                    .with_context("writer_id", writer));
            }
        }
        Ok(())
    }

    /// The writer id to use: the configured one made file-name safe, or host and pid.
    pub fn effective_writer_id(&self) -> String {
        let raw = match &self.writer_id {
            Some(writer) => writer.clone(),
            None => format!("{}-{}", crate::io::host_name(), std::process::id()),
        };
        let clean: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_WRITER_LEN / 2)
            .collect();
        if clean.is_empty() {
            "writer".into()
        } else {
            clean
        }
    }

    /// `segment_size` rounded up to whole pages.
    pub(crate) fn segment_bytes(&self) -> u64 {
        crate::format::round_up(self.segment_size.as_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_ids_are_made_file_name_safe() {
        let mut config = FileTierConfig::new("/tmp/x");
        config.writer_id = Some("node 7/rank.3".into());
        assert_eq!(config.effective_writer_id(), "node_7_rank_3");
        config.writer_id = None;
        assert!(
            config
                .effective_writer_id()
                .ends_with(&format!("-{}", std::process::id()))
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut config = FileTierConfig::new("/tmp/x");
        config.compaction_threshold = 0.0;
        let err = config.validate().expect_err("threshold 0");
        assert!(err.to_string().contains("compaction_threshold"), "{err}");
        let mut config = FileTierConfig::new("/tmp/x");
        config.stripe_size = ByteSize::kib(100);
        let err = config.validate().expect_err("stripe size");
        assert!(err.to_string().contains("stripe_size"), "{err}");
    }
}
